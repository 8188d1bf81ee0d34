//! End-to-end tests live in `tests/e2e/`; this library is empty. They run the real binaries and
//! servers as separate processes and check the deployment files (`deploy/`,
//! `docker-compose.yml`) the way CI can without a Docker engine: by validating and parsing them.
