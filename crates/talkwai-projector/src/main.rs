//! `talkwai-projector`: keeps the PostgreSQL read models up to date (the query API over them is `talkwai-query-service`), until SIGINT/SIGTERM. Flags and `TALKWAI_*` variables:
//! `--help`; the loop around the service: `talkwai_service::binary`.

/// mimalloc instead of glibc malloc: glibc spent ≈ 15 % of the command path's CPU in
/// `malloc_consolidate`/`_int_free` (BENCHMARKS.md, "Commands").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    talkwai_service::binary::run::<talkwai_projector::Projector>().await?;
    Ok(())
}
