//! Command-line flags.
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// Plays scheduler, kubelet and kube-proxy for one Node of the porthole test bed.
#[derive(Debug, Clone, Parser)]
#[command(name = "porthole-node-agent", version)]
pub struct Args {
    /// Admin kubeconfig; without it the usual inference applies ($KUBECONFIG, ~/.kube/config).
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    /// Name of the Node this agent registers and runs pods for.
    #[arg(long, env = "PORTHOLE_NODE_NAME", default_value = "porthole-node")]
    pub node_name: String,

    /// The Node's InternalIP (an address on the host's `lo`); NodePorts listen here.
    #[arg(long, env = "PORTHOLE_NODE_IP", default_value = "10.200.0.1")]
    pub node_ip: Ipv4Addr,

    /// Pod volumes, termination-message files and per-attempt container logs.
    #[arg(
        long,
        env = "PORTHOLE_STATE_DIR",
        default_value = "/var/lib/porthole-node-agent"
    )]
    pub state_dir: PathBuf,

    /// Each container's log is appended to `<namespace>_<pod>_<container>.log` here
    /// before the container is removed, for failure diagnosis.
    #[arg(
        long,
        env = "PORTHOLE_LOG_DIR",
        default_value = "/var/log/porthole-node-agent"
    )]
    pub log_dir: PathBuf,

    /// The podman executable.
    #[arg(long, env = "PORTHOLE_PODMAN", default_value = "podman")]
    pub podman: PathBuf,

    /// First crash-loop back-off (kubelet uses 10s); doubles on each restart.
    #[arg(long, env = "PORTHOLE_INITIAL_BACKOFF", default_value = "1s", value_parser = parse_duration)]
    pub initial_backoff: Duration,

    /// Cap of the crash-loop back-off.
    #[arg(long, env = "PORTHOLE_MAX_BACKOFF", default_value = "5m", value_parser = parse_duration)]
    pub max_backoff: Duration,

    /// How often the Node's Ready condition is renewed.
    #[arg(long, env = "PORTHOLE_HEARTBEAT", default_value = "20s", value_parser = parse_duration)]
    pub heartbeat: Duration,

    /// On exit, save the logs of and remove every container this agent created
    /// (a kubelet leaves them running; a test bed being torn down does not want that).
    #[arg(long, env = "PORTHOLE_REMOVE_CONTAINERS_ON_EXIT")]
    pub remove_containers_on_exit: bool,

    /// For the control-plane benchmark only (`make bench`): do not run
    /// porthole's console proxy pods (label app.kubernetes.io/name=porthole-proxy);
    /// report them Running and Ready with an address from 10.89.0.0/16, and
    /// let them go when deleted. Every other pod, the operator's too, runs as usual.
    #[arg(
        long,
        env = "PORTHOLE_FAKE_CONTAINERS",
        value_parser = clap::builder::FalseyValueParser::new()
    )]
    pub fake_containers: bool,
}

/// Parses `250ms`, `10s`, `5m` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 500ms, 10s or 5m"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(number)),
        "" | "s" => Ok(Duration::from_secs(number)),
        "m" => Ok(Duration::from_secs(number * 60)),
        _ => Err(format!("{text:?}: unknown unit {unit:?} (use ms, s or m)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert!(parse_duration("5h").is_err());
        assert!(parse_duration("s").is_err());
    }
}
