//! Operator settings, from flags or the environment (the chart sets both).

use clap::Parser;

#[derive(Parser, Clone, Debug)]
#[command(
    name = "porthole-operator",
    version,
    about = "Opens VM consoles in a browser, the Kubernetes way"
)]
pub struct Config {
    /// Image of the per-session proxy pods.
    #[arg(
        long,
        env = "PORTHOLE_PROXY_IMAGE",
        default_value = "porthole/proxy:dev"
    )]
    pub proxy_image: String,

    /// Pull policy of the proxy image.
    #[arg(
        long,
        env = "PORTHOLE_PROXY_IMAGE_PULL_POLICY",
        default_value = "IfNotPresent"
    )]
    pub proxy_image_pull_policy: String,

    /// Namespace whose Secrets hold Hypervisor credentials when a reference names none.
    #[arg(long, env = "POD_NAMESPACE", default_value = "porthole-system")]
    pub namespace: String,

    /// Address of the health and metrics endpoint (/healthz, /readyz, /metrics).
    #[arg(long, env = "PORTHOLE_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: std::net::SocketAddr,

    /// Renew a session's Proxmox login ticket once it is this old (tickets live
    /// 2 h), such as `1h` or `90m`.
    #[arg(long, env = "PORTHOLE_PVE_TICKET_RENEW_AFTER", default_value = "1h", value_parser = duration)]
    pub pve_ticket_renew_after: std::time::Duration,

    /// Give up on a Proxmox API request after this long.
    #[arg(long, env = "PORTHOLE_PVE_TIMEOUT", default_value = "15s", value_parser = duration)]
    pub pve_timeout: std::time::Duration,

    /// Log filter, tracing `EnvFilter` syntax.
    #[arg(long, env = "PORTHOLE_LOG", default_value = "info")]
    pub log_filter: String,

    /// Log format: `json` for machines, `text` for people.
    #[arg(long, env = "PORTHOLE_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
}

fn duration(text: &str) -> Result<std::time::Duration, String> {
    porthole_api::duration::parse(text).map_err(|e| e.to_string())
}

impl Config {
    /// Settings for tests: defaults as if no flag were given.
    pub fn for_tests() -> Self {
        Config::parse_from(["porthole-operator"])
    }
}
