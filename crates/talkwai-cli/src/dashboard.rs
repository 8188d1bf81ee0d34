//! The live dashboard of `talkwai up` over HTTP: the static files Vite built into
//! `clients/dashboard/dist` and `/config.json` (where the browser finds NATS: the WebSocket URL).
//! Loopback only, GET and HEAD only, no directory listing, nothing outside the directory. The
//! dev tokens are never served: `up` prints them in the dashboard URLs' fragments (`#token=`),
//! which browsers do not send to servers. Files are opened and streamed by `tower-http`'s
//! `ServeDir` (which also refuses any path leaving the directory); [`resolve`] first refuses
//! dot files and anything outside a plain alphabet.

use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;
use tower_http::services::ServeDir;
use uuid::Uuid;

use crate::error::CliError;

/// The `$users` id in the demo admin's dev token (the admin view: admin room presence and
/// system alerts, which need an admin token but no admin entity).
pub const DEMO_ADMIN_USER: Uuid = Uuid::from_u128(0xb0000000_0000_4000_8000_0000000000ad);

/// What the page reads from `/config.json`.
#[derive(Debug, Clone)]
pub struct PageConfig {
    /// The nats-server WebSocket URL, `ws://127.0.0.1:<port>`.
    pub nats_ws_url: String,
}

/// The dashboard's HTTP listener, bound before the banner is printed.
#[derive(Debug)]
pub struct Dashboard {
    listener: TcpListener,
    dir: PathBuf,
    config: Bytes,
}

/// Binds 127.0.0.1:`port` (a free port when it is 0 or taken).
pub async fn bind(port: u16, dir: PathBuf, config: &PageConfig) -> Result<Dashboard, CliError> {
    let listener = match TcpListener::bind(("127.0.0.1", port)).await {
        Ok(listener) => listener,
        Err(err) => {
            tracing::warn!(port, error = %err, "dashboard port taken, using a free one");
            TcpListener::bind(("127.0.0.1", 0)).await.map_err(|e| {
                CliError::io("binding the dashboard port on", Path::new("127.0.0.1"), e)
            })?
        }
    };
    let config = serde_json::to_vec(&json!({ "natsWsUrl": config.nats_ws_url }))
        .map_err(|e| CliError::Usage(e.to_string()))?;
    Ok(Dashboard {
        listener,
        dir,
        config: config.into(),
    })
}

impl Dashboard {
    /// The address it listens on.
    pub fn local_addr(&self) -> Result<SocketAddr, CliError> {
        self.listener.local_addr().map_err(|e| {
            CliError::io(
                "reading the dashboard address of",
                Path::new("127.0.0.1"),
                e,
            )
        })
    }

    /// The page's URL, `http://127.0.0.1:<port>/`.
    pub fn url(&self) -> Result<String, CliError> {
        Ok(format!("http://{}/", self.local_addr()?))
    }

    /// Whether the built page is there (`index.html` in the directory).
    pub fn is_built(&self) -> bool {
        self.dir.join("index.html").is_file()
    }

    /// The directory it serves.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Serves until `shutdown` resolves; connections in flight are dropped then.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), CliError> {
        tokio::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                () = &mut shutdown => return Ok(()),
                accepted = self.listener.accept() => accepted,
            };
            let (stream, _) = match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    tracing::warn!(error = %err, "dashboard accept failed");
                    continue;
                }
            };
            let dir = self.dir.clone();
            let config = self.config.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request| {
                    let dir = dir.clone();
                    let config = config.clone();
                    async move {
                        Ok::<_, std::convert::Infallible>(respond(&dir, &config, &request).await)
                    }
                });
                if let Err(err) = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                {
                    tracing::debug!(error = %err, "dashboard connection ended");
                }
            });
        }
    }
}

/// The file a request path names inside `dir`; `None` for anything that could leave it.
pub fn resolve(dir: &Path, path: &str) -> Option<PathBuf> {
    let path = path.split(['?', '#']).next().unwrap_or("");
    let relative = path.trim_start_matches('/');
    let relative = if relative.is_empty() {
        "index.html"
    } else {
        relative
    };
    if !relative
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b))
    {
        return None;
    }
    let candidate = Path::new(relative);
    if !candidate
        .components()
        .all(|c| matches!(c, Component::Normal(part) if !part.to_string_lossy().starts_with('.')))
    {
        return None;
    }
    Some(dir.join(candidate))
}

/// The `Content-Type` of a file name.
pub fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json" | "map") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("woff2") => "font/woff2",
        _ => "application/octet-stream",
    }
}

/// A response body: a file streamed by `ServeDir`, or bytes of our own.
type Body = UnsyncBoxBody<Bytes, std::io::Error>;

fn reply(
    status: StatusCode,
    content_type: &'static str,
    body: Bytes,
    cache: &'static str,
) -> Response<Body> {
    let mut response = Response::new(
        Full::new(body)
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static(cache));
    response
}

async fn respond(dir: &Path, config: &Bytes, request: &Request<Incoming>) -> Response<Body> {
    let text = |status, message: &'static str| {
        reply(
            status,
            "text/plain; charset=utf-8",
            Bytes::from_static(message.as_bytes()),
            "no-store",
        )
    };
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET or HEAD only\n");
    }
    let path = request.uri().path();
    if path == "/config.json" {
        return reply(
            StatusCode::OK,
            "application/json",
            config.clone(),
            "no-store",
        );
    }
    let not_found = |file: &Path| {
        if file.ends_with("index.html") {
            text(
                StatusCode::NOT_FOUND,
                "the dashboard is not built: run `npm --prefix clients ci && npm --prefix clients run build` (scripts/dev.sh up does)\n",
            )
        } else {
            text(StatusCode::NOT_FOUND, "not found\n")
        }
    };
    // Our policy first (no dot files, a plain alphabet), then `ServeDir` (which refuses any
    // path leaving the directory on its own) opens and streams the file, HEAD and ranges
    // included, asked for exactly the resolved file (`/` names `index.html`).
    let Some(file) = resolve(dir, path) else {
        return text(StatusCode::NOT_FOUND, "not found\n");
    };
    let Some(relative) = file.strip_prefix(dir).ok().and_then(Path::to_str) else {
        return not_found(&file);
    };
    let mut forwarded = Request::new(());
    *forwarded.method_mut() = request.method().clone();
    *forwarded.headers_mut() = request.headers().clone();
    match format!("/{relative}").parse() {
        Ok(uri) => *forwarded.uri_mut() = uri,
        Err(_) => return not_found(&file),
    }
    let served = ServeDir::new(dir)
        .append_index_html_on_directories(false)
        .try_call(forwarded)
        .await;
    match served {
        Ok(response) if response.status() == StatusCode::NOT_FOUND => not_found(&file),
        Ok(response) => {
            let (mut parts, body) = response.into_parts();
            // Vite names assets by content hash; the page itself must always be fresh.
            let cache = if path.starts_with("/assets/") {
                "public, max-age=31536000, immutable"
            } else {
                "no-store"
            };
            parts
                .headers
                .insert(CONTENT_TYPE, HeaderValue::from_static(content_type(&file)));
            parts
                .headers
                .insert(CACHE_CONTROL, HeaderValue::from_static(cache));
            Response::from_parts(parts, body.boxed_unsync())
        }
        Err(_) => not_found(&file),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside_the_directory() {
        let dir = Path::new("/srv/dist");
        assert_eq!(resolve(dir, "/"), Some(dir.join("index.html")));
        assert_eq!(resolve(dir, "/?x=1"), Some(dir.join("index.html")));
        assert_eq!(
            resolve(dir, "/assets/index-1a.js"),
            Some(dir.join("assets/index-1a.js"))
        );
        for bad in [
            "/../secrets.json",
            "/assets/../../x",
            "/.env",
            "/a/.git/config",
            "/%2e%2e/x",
            "//etc/passwd",
        ] {
            let resolved = resolve(dir, bad);
            assert!(
                resolved
                    .as_ref()
                    .is_none_or(|p| p.starts_with(dir) && !p.to_string_lossy().contains("..")),
                "{bad} resolved to {resolved:?}"
            );
        }
        assert_eq!(resolve(dir, "/../secrets.json"), None);
        assert_eq!(resolve(dir, "/.env"), None);
    }

    #[test]
    fn content_types_by_extension() {
        assert_eq!(
            content_type(Path::new("a/index.html")),
            "text/html; charset=utf-8"
        );
        assert_eq!(
            content_type(Path::new("x.js")),
            "text/javascript; charset=utf-8"
        );
        assert_eq!(content_type(Path::new("x.bin")), "application/octet-stream");
    }

    /// One request over a fresh connection: (status, lower-case headers, body).
    async fn fetch(
        addr: SocketAddr,
        method: &str,
        path: &str,
    ) -> (u16, Vec<(String, String)>, String) {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let request = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("send");
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.expect("read");
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").expect("a head");
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .expect("a status");
        let headers = lines
            .filter_map(|l| l.split_once(": "))
            .map(|(k, v)| (k.to_ascii_lowercase(), v.to_owned()))
            .collect();
        (status, headers, body.to_owned())
    }

    fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    #[tokio::test]
    async fn serves_the_built_page_and_nothing_else() {
        let root = tempfile::tempdir().expect("tempdir");
        let dist = root.path().join("dist");
        std::fs::create_dir_all(dist.join("assets")).expect("dirs");
        std::fs::write(dist.join("index.html"), "<html>page</html>").expect("index");
        std::fs::write(dist.join("assets/app-1a.js"), "console.log(1)").expect("asset");
        std::fs::write(dist.join(".env"), "SECRET=1").expect("dot file");
        std::fs::write(root.path().join("secret.txt"), "outside").expect("outside");
        let config = PageConfig {
            nats_ws_url: "ws://127.0.0.1:1".into(),
        };
        let dashboard = bind(0, dist.clone(), &config).await.expect("bind");
        let addr = dashboard.local_addr().expect("addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(dashboard.run(async {
            let _ = stopped.await;
        }));

        let (status, headers, body) = fetch(addr, "GET", "/").await;
        assert_eq!((status, body.as_str()), (200, "<html>page</html>"));
        assert_eq!(
            header(&headers, "content-type"),
            Some("text/html; charset=utf-8")
        );
        assert_eq!(header(&headers, "cache-control"), Some("no-store"));

        let (status, headers, body) = fetch(addr, "HEAD", "/").await;
        assert_eq!((status, body.as_str()), (200, ""));
        assert_eq!(header(&headers, "content-length"), Some("17"));

        let (status, headers, body) = fetch(addr, "GET", "/assets/app-1a.js").await;
        assert_eq!((status, body.as_str()), (200, "console.log(1)"));
        assert_eq!(
            header(&headers, "content-type"),
            Some("text/javascript; charset=utf-8")
        );
        assert_eq!(
            header(&headers, "cache-control"),
            Some("public, max-age=31536000, immutable")
        );

        let (status, headers, body) = fetch(addr, "GET", "/config.json").await;
        assert_eq!(status, 200);
        assert_eq!(header(&headers, "content-type"), Some("application/json"));
        assert_eq!(body, r#"{"natsWsUrl":"ws://127.0.0.1:1"}"#);

        for bad in [
            "/../secret.txt",
            "/%2e%2e/secret.txt",
            "/assets/..%2f..%2fsecret.txt",
            "/.env",
            "/%2eenv",
            "/assets",
            "/missing.js",
        ] {
            let (status, _, body) = fetch(addr, "GET", bad).await;
            assert_eq!((status, body.as_str()), (404, "not found\n"), "{bad}");
        }
        let (status, _, _) = fetch(addr, "POST", "/").await;
        assert_eq!(status, 405);

        std::fs::remove_file(dist.join("index.html")).expect("unbuild");
        let (status, _, body) = fetch(addr, "GET", "/").await;
        assert_eq!(status, 404);
        assert!(body.contains("not built"), "{body}");

        let _ = stop.send(());
        server.await.expect("joins").expect("serves");
    }
}
