//! Starts real PostgreSQL servers and writes and reads through them.

use std::path::Path;

use talkwai_testkit::{Postgres, TestkitError};
use tokio_postgres::{Client, NoTls};

fn report(context: &str, err: &dyn std::error::Error) -> String {
    let mut text = format!("{context}: {err}");
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

async fn start() -> Postgres {
    Postgres::start()
        .await
        .unwrap_or_else(|e| panic!("{}", report("starting postgres", &e)))
}

async fn connect(conn: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(conn, NoTls)
        .await
        .unwrap_or_else(|e| panic!("{}", report(&format!("connecting to {conn}"), &e)));
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

async fn fresh_db(pg: &Postgres) -> String {
    pg.create_unique_database("testkit")
        .await
        .unwrap_or_else(|e| panic!("{}", report("creating a database", &e)))
}

async fn write_rows(conn: &str, values: &[&str]) {
    let client = connect(conn).await;
    client
        .batch_execute("CREATE TABLE IF NOT EXISTS notes (id bigserial PRIMARY KEY, body text)")
        .await
        .unwrap_or_else(|e| panic!("{}", report("create table", &e)));
    for value in values {
        client
            .execute("INSERT INTO notes (body) VALUES ($1)", &[value])
            .await
            .unwrap_or_else(|e| panic!("{}", report("insert", &e)));
    }
}

async fn read_rows(conn: &str) -> Vec<String> {
    let client = connect(conn).await;
    client
        .query("SELECT body FROM notes ORDER BY id", &[])
        .await
        .unwrap_or_else(|e| panic!("{}", report("select", &e)))
        .iter()
        .map(|row| row.get(0))
        .collect()
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[tokio::test]
async fn writes_and_reads_a_table() {
    let pg = start().await;
    let db = fresh_db(&pg).await;

    write_rows(&db, &["one", "two"]).await;

    assert_eq!(read_rows(&db).await, ["one", "two"]);
    assert!(
        pg.connection_string()
            .starts_with(&format!("host=127.0.0.1 port={} ", pg.port())),
        "unexpected connection string {}",
        pg.connection_string()
    );
}

#[tokio::test]
async fn each_database_is_separate() {
    let pg = start().await;
    let (a, b) = (fresh_db(&pg).await, fresh_db(&pg).await);
    assert_ne!(a, b);

    write_rows(&a, &["only in a"]).await;
    write_rows(&b, &[]).await;

    assert_eq!(read_rows(&a).await, ["only in a"]);
    assert!(read_rows(&b).await.is_empty(), "database b sees a's rows");
}

#[tokio::test]
async fn two_servers_run_side_by_side() {
    let (a, b) = tokio::join!(start(), start());

    assert_ne!(a.port(), b.port(), "both servers got the same port");
    assert_ne!(a.data_dir(), b.data_dir(), "both servers share a data dir");
    write_rows(&a.connection_string(), &["a"]).await;
    write_rows(&b.connection_string(), &["b"]).await;
    assert_eq!(read_rows(&a.connection_string()).await, ["a"]);
    assert_eq!(read_rows(&b.connection_string()).await, ["b"]);
}

#[tokio::test]
async fn drop_stops_the_server_and_deletes_its_dirs() {
    let pg = start().await;
    let temp = pg.temp_dir().to_path_buf();
    let data = pg.data_dir().to_path_buf();
    let pid = pg.pid().expect("a started server has a pid");
    write_rows(&pg.connection_string(), &["gone soon"]).await;
    assert!(
        data.join("PG_VERSION").exists(),
        "no cluster in {}",
        data.display()
    );

    drop(pg);

    assert!(!temp.exists(), "temp dir {} left behind", temp.display());
    assert!(!data.exists(), "data dir {} left behind", data.display());
    assert!(
        !pid_alive(pid),
        "postmaster pid {pid} still alive after drop"
    );
}

#[tokio::test]
async fn restart_keeps_port_and_data() {
    let mut pg = start().await;
    let port = pg.port();
    let db = fresh_db(&pg).await;
    write_rows(&db, &["before stop"]).await;

    pg.stop().await.expect("stop");
    assert!(!pg.is_running(), "postgres still running after stop");
    assert!(connect_fails(&db).await, "connect succeeded while stopped");
    pg.restart()
        .await
        .unwrap_or_else(|e| panic!("{}", report("restart after stop", &e)));
    assert_eq!(pg.port(), port, "restart changed the port");
    assert_eq!(read_rows(&db).await, ["before stop"]);

    write_rows(&db, &["before kill"]).await;
    pg.kill().await.expect("immediate shutdown");
    pg.restart()
        .await
        .unwrap_or_else(|e| panic!("{}", report("restart after kill", &e)));
    assert_eq!(read_rows(&db).await, ["before stop", "before kill"]);
}

async fn connect_fails(conn: &str) -> bool {
    tokio_postgres::connect(conn, NoTls).await.is_err()
}

#[tokio::test]
async fn persistent_data_dir_is_kept_and_reused() {
    let parent = tempfile::tempdir().expect("temp dir");
    let dir = parent.path().join("pgdata");
    let builder = || {
        Postgres::builder()
            .data_dir(&dir)
            .persistent(true)
            .durable(true)
    };

    {
        let pg = builder()
            .start()
            .await
            .unwrap_or_else(|e| panic!("{}", report("first persistent start", &e)));
        write_rows(&pg.connection_string(), &["kept"]).await;
    }
    assert!(
        dir.join("PG_VERSION").exists(),
        "persistent data dir was deleted on drop"
    );

    let pg = builder()
        .start()
        .await
        .unwrap_or_else(|e| panic!("{}", report("second persistent start", &e)));
    assert_eq!(read_rows(&pg.connection_string()).await, ["kept"]);
}

#[tokio::test]
async fn bad_database_names_are_rejected() {
    let pg = start().await;
    let err = pg
        .create_database("x\"; DROP DATABASE postgres; --")
        .await
        .expect_err("an unsafe name must be rejected");
    assert!(
        matches!(err, TestkitError::InvalidConfig(_)),
        "unexpected error {err}"
    );
}
