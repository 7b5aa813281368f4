use clap::Parser;

/// Ingest, reports and provenance make many small allocations (record
/// fields, version keys); mimalloc serves them faster than the system
/// allocator. The benchmarks use it too, so they measure what runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = apiwitness_aggregator::config::Config::parse();
    apiwitness_runtime::init_tracing(&config.log, config.log_format).map_err(anyhow::Error::msg)?;
    apiwitness_aggregator::run(config).await?;
    Ok(())
}
