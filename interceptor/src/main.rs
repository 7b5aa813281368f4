use clap::Parser;

fn main() -> anyhow::Result<()> {
    let config = apiwitness_interceptor::config::Config::parse();
    apiwitness_runtime::init_tracing(&config.log, config.log_format).map_err(anyhow::Error::msg)?;
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.worker_threads.max(1))
        .enable_all()
        .build()?
        .block_on(apiwitness_interceptor::run(config))?;
    Ok(())
}
