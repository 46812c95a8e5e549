use clap::Parser;
use porthole_operator::{Config, run};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    porthole_operator::telemetry::init_logging(&config.log_filter, &config.log_format);
    run(config).await
}
