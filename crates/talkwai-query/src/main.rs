//! `talkwai-query-service`: answers queries and live queries on `talkwai.qry.*` from the PostgreSQL read models, until SIGINT/SIGTERM. Flags and `TALKWAI_*` variables:
//! `--help`; the loop around the service: `talkwai_service::binary`.

/// mimalloc instead of glibc malloc: glibc spent ≈ 15 % of the command path's CPU in
/// `malloc_consolidate`/`_int_free` (BENCHMARKS.md, "Commands").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    talkwai_service::binary::run::<talkwai_query::QueryServer>().await?;
    Ok(())
}
