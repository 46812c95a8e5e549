use clap::Parser;
use porthole_operator::{Config, run};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    porthole_operator::telemetry::init_logging(&config.log_filter, &config.log_format);
    if config.release_sessions {
        rustls::crypto::ring::default_provider()
            .install_default()
            .map_err(|_| anyhow::anyhow!("a rustls crypto provider was already installed"))?;
        return porthole_operator::release::run(&config).await;
    }
    run(config).await
}
