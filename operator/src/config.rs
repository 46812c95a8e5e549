//! Operator settings, from flags or the environment (the chart sets both).

use clap::Parser;
use porthole_api::v1alpha1::ExposeType;

use crate::exposure::BaseUrl;

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

    /// porthole's own namespace: the only one whose Secrets the operator reads
    /// (Hypervisor credentials), where recording claims live, and where the
    /// leader election Lease is.
    #[arg(long, env = "POD_NAMESPACE", default_value = "porthole-system")]
    pub namespace: String,

    /// Namespace of every session's proxy Pod, Secret, Service, Ingress and
    /// NetworkPolicy (unset: porthole's own namespace). Tenants must have no
    /// access there: it holds every session's credentials.
    #[arg(long, env = "PORTHOLE_SESSIONS_NAMESPACE")]
    pub sessions_namespace: Option<String>,

    /// The PersistentVolumeClaim, in porthole's namespace, that receives
    /// recordings when a session's Hypervisor names none (unset: sessions on
    /// such Hypervisors cannot be recorded).
    #[arg(long, env = "PORTHOLE_RECORDING_CLAIM")]
    pub recording_claim: Option<String>,

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

    /// How sessions are exposed when their `spec.expose.type` is unset:
    /// `ClusterIP`, `NodePort`, `LoadBalancer` or `Ingress`.
    #[arg(long, env = "PORTHOLE_EXPOSE", default_value = "ClusterIP", value_parser = expose_type)]
    pub expose: ExposeType,

    /// Public base URL of the ingress controller for Ingress exposure, such as
    /// `https://consoles.example.com` or `https://example.com/consoles`:
    /// its host is the Ingress rules' default host, its path their prefix.
    #[arg(long, env = "PORTHOLE_BASE_URL")]
    pub base_url: Option<BaseUrl>,

    /// Default IngressClass of session Ingresses (unset: the cluster default).
    #[arg(long, env = "PORTHOLE_INGRESS_CLASS")]
    pub ingress_class: Option<String>,

    /// Default TLS Secret of session Ingresses, in the sessions namespace.
    #[arg(long, env = "PORTHOLE_INGRESS_TLS_SECRET")]
    pub ingress_tls_secret: Option<String>,

    /// Exposure types sessions may ask for (comma-separated), besides the
    /// default (`--expose`). NodePort and LoadBalancer serve plaintext HTTP on
    /// an address outside the cluster: list them only where that is meant.
    #[arg(long, env = "PORTHOLE_ALLOWED_EXPOSE_TYPES", default_value = "Ingress", value_parser = expose_types)]
    pub allowed_expose_types: ExposeTypes,

    /// IngressClasses sessions may name (comma-separated), besides the default.
    #[arg(long, env = "PORTHOLE_ALLOWED_INGRESS_CLASSES", value_delimiter = ',')]
    pub allowed_ingress_classes: Vec<String>,

    /// Ingress hosts sessions may name (comma-separated), besides the base
    /// URL's host. `*.example.com` allows any one label under example.com.
    #[arg(long, env = "PORTHOLE_ALLOWED_INGRESS_HOSTS", value_delimiter = ',')]
    pub allowed_ingress_hosts: Vec<String>,

    /// TLS Secrets (in the sessions namespace) sessions may name for their
    /// Ingress (comma-separated), besides the default.
    #[arg(
        long,
        env = "PORTHOLE_ALLOWED_INGRESS_TLS_SECRETS",
        value_delimiter = ','
    )]
    pub allowed_ingress_tls_secrets: Vec<String>,

    /// Host name or address viewers use for NodePort sessions (unset: the
    /// address of the node that runs the proxy pod).
    #[arg(long, env = "PORTHOLE_NODE_ADDRESS")]
    pub node_address: Option<String>,

    /// Give each session a NetworkPolicy that lets its proxy pod reach only
    /// its hypervisor. Turn off only where another policy engine does this.
    #[arg(long, env = "PORTHOLE_NETWORK_POLICIES", default_value_t = true, action = clap::ArgAction::Set)]
    pub network_policies: bool,

    /// Elect a leader through a Lease so that only one replica reconciles.
    /// Turn off only to run a single replica outside the cluster.
    #[arg(long, env = "PORTHOLE_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,

    /// Name of the leader election Lease, in the operator's namespace.
    #[arg(
        long,
        env = "PORTHOLE_LEADER_ELECTION_LEASE",
        default_value = "porthole-operator"
    )]
    pub leader_election_lease: String,

    /// How long the leader's Lease stays valid after its last renewal: how long
    /// a standby waits to take over from a leader that died without handing over.
    #[arg(long, env = "PORTHOLE_LEADER_ELECTION_LEASE_DURATION", default_value = "15s", value_parser = duration)]
    pub leader_election_lease_duration: std::time::Duration,

    /// The leader stops (and exits) once it could not renew its Lease for this long.
    #[arg(long, env = "PORTHOLE_LEADER_ELECTION_RENEW_DEADLINE", default_value = "10s", value_parser = duration)]
    pub leader_election_renew_deadline: std::time::Duration,

    /// How often the leader renews its Lease and standbys try to take it.
    #[arg(long, env = "PORTHOLE_LEADER_ELECTION_RETRY_PERIOD", default_value = "2s", value_parser = duration)]
    pub leader_election_retry_period: std::time::Duration,

    /// Most sessions reconciled at once. Bounds the operator's connections to
    /// the API server and its memory when many sessions start or end together.
    #[arg(long, env = "PORTHOLE_MAX_CONCURRENT_RECONCILES", default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..))]
    pub max_concurrent_reconciles: u16,

    /// Release every session and exit, instead of running: what the chart's
    /// pre-delete hook does when porthole is uninstalled. Stops the operator
    /// (`--operator-deployment`), ends the sessions that are not over
    /// (reason `OperatorUninstalled`), removes porthole's finalizer from
    /// every ConsoleSession and deletes every session's children.
    #[arg(long)]
    pub release_sessions: bool,

    /// The operator's Deployment, in porthole's namespace, that
    /// `--release-sessions` scales to zero first.
    #[arg(long, env = "PORTHOLE_OPERATOR_DEPLOYMENT")]
    pub operator_deployment: Option<String>,

    /// Log filter, tracing `EnvFilter` syntax.
    #[arg(long, env = "PORTHOLE_LOG", default_value = "info")]
    pub log_filter: String,

    /// Log format: `json` for machines, `text` for people.
    #[arg(long, env = "PORTHOLE_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
}

fn expose_type(text: &str) -> Result<ExposeType, String> {
    match text {
        "ClusterIP" => Ok(ExposeType::ClusterIP),
        "NodePort" => Ok(ExposeType::NodePort),
        "LoadBalancer" => Ok(ExposeType::LoadBalancer),
        "Ingress" => Ok(ExposeType::Ingress),
        other => Err(format!(
            "{other:?} is not one of ClusterIP, NodePort, LoadBalancer, Ingress"
        )),
    }
}

/// A comma-separated list of exposure types; empty allows none but the default.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExposeTypes(pub Vec<ExposeType>);

impl ExposeTypes {
    pub fn contains(&self, type_: &ExposeType) -> bool {
        self.0.contains(type_)
    }

    pub fn iter(&self) -> impl Iterator<Item = &ExposeType> {
        self.0.iter()
    }
}

fn expose_types(text: &str) -> Result<ExposeTypes, String> {
    text.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(expose_type)
        .collect::<Result<_, _>>()
        .map(ExposeTypes)
}

fn duration(text: &str) -> Result<std::time::Duration, String> {
    porthole_api::duration::parse(text).map_err(|e| e.to_string())
}

impl Config {
    /// Settings for tests: defaults as if no flag were given.
    pub fn for_tests() -> Self {
        Config::parse_from(["porthole-operator"])
    }

    /// Where sessions' children live.
    pub fn sessions_namespace(&self) -> &str {
        self.sessions_namespace
            .as_deref()
            .filter(|ns| !ns.is_empty())
            .unwrap_or(&self.namespace)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The chart sets every list, empty ones as "".
    #[test]
    fn empty_policy_lists_from_the_chart_allow_nothing_more() {
        let config = Config::try_parse_from([
            "porthole-operator",
            "--allowed-expose-types",
            "",
            "--allowed-ingress-hosts",
            "",
        ])
        .unwrap();
        assert_eq!(config.allowed_expose_types, ExposeTypes::default());
        assert!(config.allowed_ingress_hosts.iter().all(|h| h.is_empty()));
        let config = Config::try_parse_from([
            "porthole-operator",
            "--allowed-expose-types",
            "NodePort, LoadBalancer",
        ])
        .unwrap();
        assert_eq!(
            config.allowed_expose_types,
            ExposeTypes(vec![ExposeType::NodePort, ExposeType::LoadBalancer])
        );
        assert!(
            Config::try_parse_from(["porthole-operator", "--allowed-expose-types", "Tunnel"])
                .is_err()
        );
    }

    #[test]
    fn sessions_live_in_porthole_namespace_unless_told_otherwise() {
        assert_eq!(Config::for_tests().sessions_namespace(), "porthole-system");
        let config =
            Config::try_parse_from(["porthole-operator", "--sessions-namespace", "consoles"])
                .unwrap();
        assert_eq!(config.sessions_namespace(), "consoles");
    }
}
