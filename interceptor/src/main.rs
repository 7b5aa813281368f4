use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = apiwitness_interceptor::config::Config::parse();
    apiwitness_runtime::init_tracing(&config.log, config.log_format).map_err(anyhow::Error::msg)?;
    apiwitness_interceptor::run(config).await?;
    Ok(())
}
