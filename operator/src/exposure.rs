//! How viewers reach a session (`spec.expose`), and the console URL that
//! follows from it. Pure: the reconciler passes in what the API returned.

use k8s_openapi::api::core::v1::{Pod, Service};
use porthole_api::contract::SERVICE_PORT;
use porthole_api::v1alpha1::{Expose, ExposeType};

use crate::config::Config;

/// The operator's public base URL for Ingress exposure: where the ingress
/// controller is reached, with an optional path prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BaseUrl {
    /// `http` or `https`.
    pub scheme: String,
    /// `host[:port]`, as viewers type it.
    pub authority: String,
    /// The host alone, for the Ingress rule.
    pub host: String,
    /// The path prefix without a trailing `/` (empty for none).
    pub path: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BaseUrlError {
    #[error("{0:?} is not an absolute http(s) URL such as https://consoles.example.com")]
    NotAbsolute(String),
    #[error("{0:?} may not have a query or fragment")]
    QueryOrFragment(String),
}

impl std::str::FromStr for BaseUrl {
    type Err = BaseUrlError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let not_absolute = || BaseUrlError::NotAbsolute(text.to_string());
        if text.contains(['?', '#']) {
            return Err(BaseUrlError::QueryOrFragment(text.to_string()));
        }
        let uri: http::Uri = text.parse().map_err(|_| not_absolute())?;
        let scheme = uri.scheme_str().ok_or_else(not_absolute)?;
        if scheme != "http" && scheme != "https" {
            return Err(not_absolute());
        }
        let authority = uri.authority().ok_or_else(not_absolute)?;
        if authority.as_str().contains('@') || authority.host().is_empty() {
            return Err(not_absolute());
        }
        // `http` is lenient: it takes anything after the colon as the port
        // text, skips what stands between a `]` and that colon, and takes
        // any text in brackets; all of it would end up in every console URL.
        if !porthole_api::names::is_host_and_port(authority) {
            return Err(not_absolute());
        }
        Ok(BaseUrl {
            scheme: scheme.to_string(),
            authority: authority.as_str().to_ascii_lowercase(),
            host: authority.host().to_ascii_lowercase(),
            path: uri.path().trim_end_matches('/').to_string(),
        })
    }
}

/// A resolved `spec.expose`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exposure {
    ClusterIp,
    NodePort,
    LoadBalancer,
    Ingress(IngressPlan),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IngressPlan {
    pub class_name: Option<String>,
    /// The rule's host.
    pub host: String,
    /// `/prefix/<namespace>/<name>/`: the proxy serves the page and its
    /// WebSocket under any prefix, so no rewriting is needed.
    pub path: String,
    pub tls_secret_name: Option<String>,
    /// `scheme://authority` of the console URL.
    pub origin: String,
}

/// Why a session's exposure cannot be built: [`Error::NoIngressHost`] is an
/// invalid spec, the others the administrator's policy refusing it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error(
        "Ingress exposure needs a host: set spec.expose.ingress.host, or install porthole with a base URL (exposure.baseURL)"
    )]
    NoIngressHost,
    #[error(
        "spec.expose.type {asked:?} is not allowed here (allowed: {allowed}); NodePort and LoadBalancer serve plaintext on addresses outside the cluster, so the administrator must list them (chart value exposure.allowedTypes)"
    )]
    TypeNotAllowed { asked: String, allowed: String },
    #[error(
        "spec.expose.ingress.{field} {asked:?} is not allowed here (allowed: {allowed}); the administrator lists them in the chart value exposure.ingress.{list}"
    )]
    IngressSettingNotAllowed {
        field: &'static str,
        list: &'static str,
        asked: String,
        allowed: String,
    },
}

impl Error {
    /// Whether the policy refused the request (as opposed to a spec that
    /// cannot work anywhere).
    pub fn is_policy(&self) -> bool {
        !matches!(self, Error::NoIngressHost)
    }
}

/// The administrator's default plus the listed ones, for messages.
fn allowed_list<'a>(default: Option<&'a str>, listed: &'a [String]) -> String {
    let all: Vec<&str> = default
        .into_iter()
        .chain(listed.iter().map(String::as_str))
        .collect();
    if all.is_empty() {
        "none".to_string()
    } else {
        all.join(", ")
    }
}

/// `*.example.com` matches exactly one label under `example.com`.
fn host_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(suffix) => host
            .strip_suffix(suffix)
            .and_then(|label| label.strip_suffix('.'))
            .is_some_and(|label| !label.is_empty() && !label.contains('.')),
        None => pattern.eq_ignore_ascii_case(host),
    }
}

/// Checks what a session asks for against the administrator's policy: its
/// exposure type, and for Ingress the class, host and TLS Secret it names.
/// What the session leaves to the operator's defaults is always allowed.
fn check_policy(expose: Option<&Expose>, config: &Config) -> Result<(), Error> {
    let Some(expose) = expose else {
        return Ok(());
    };
    if let Some(asked) = expose.type_
        && asked != config.expose
        && !config.allowed_expose_types.contains(&asked)
    {
        let listed: Vec<String> = config
            .allowed_expose_types
            .iter()
            .map(|t| format!("{t:?}"))
            .collect();
        return Err(Error::TypeNotAllowed {
            asked: format!("{asked:?}"),
            allowed: allowed_list(Some(&format!("{:?}", config.expose)), &listed),
        });
    }
    let Some(ingress) = &expose.ingress else {
        return Ok(());
    };
    let refuse = |field, list, asked: &str, default: Option<&str>, listed: &[String]| {
        Err(Error::IngressSettingNotAllowed {
            field,
            list,
            asked: asked.to_string(),
            allowed: allowed_list(default, listed),
        })
    };
    if let Some(class) = &ingress.class_name
        && config.ingress_class.as_ref() != Some(class)
        && !config.allowed_ingress_classes.contains(class)
    {
        return refuse(
            "className",
            "allowedClassNames",
            class,
            config.ingress_class.as_deref(),
            &config.allowed_ingress_classes,
        );
    }
    if let Some(host) = &ingress.host {
        let base = config.base_url.as_ref().map(|b| b.host.as_str());
        let allowed = base.is_some_and(|b| b.eq_ignore_ascii_case(host))
            || config
                .allowed_ingress_hosts
                .iter()
                .any(|pattern| host_matches(pattern, host));
        if !allowed {
            return refuse(
                "host",
                "allowedHosts",
                host,
                base,
                &config.allowed_ingress_hosts,
            );
        }
    }
    if let Some(secret) = &ingress.tls_secret_name
        && config.ingress_tls_secret.as_ref() != Some(secret)
        && !config.allowed_ingress_tls_secrets.contains(secret)
    {
        return refuse(
            "tlsSecretName",
            "allowedTLSSecretNames",
            secret,
            config.ingress_tls_secret.as_deref(),
            &config.allowed_ingress_tls_secrets,
        );
    }
    Ok(())
}

/// What the session asks for, with the operator's defaults filled in, once
/// the administrator's policy allows it.
pub fn resolve(
    expose: Option<&Expose>,
    config: &Config,
    namespace: &str,
    name: &str,
) -> Result<Exposure, Error> {
    check_policy(expose, config)?;
    let kind = expose.and_then(|e| e.type_).unwrap_or(config.expose);
    Ok(match kind {
        ExposeType::ClusterIP => Exposure::ClusterIp,
        ExposeType::NodePort => Exposure::NodePort,
        ExposeType::LoadBalancer => Exposure::LoadBalancer,
        ExposeType::Ingress => {
            let spec = expose.and_then(|e| e.ingress.clone()).unwrap_or_default();
            let base = config.base_url.as_ref();
            let tls_secret_name = spec.tls_secret_name.or(config.ingress_tls_secret.clone());
            let scheme = match (&tls_secret_name, base) {
                (Some(_), _) => "https",
                (None, Some(base)) => base.scheme.as_str(),
                (None, None) => "http",
            };
            let (host, authority) = match (spec.host, base) {
                (Some(host), _) => (host.clone(), host),
                (None, Some(base)) => (base.host.clone(), base.authority.clone()),
                (None, None) => return Err(Error::NoIngressHost),
            };
            let prefix = base.map(|b| b.path.as_str()).unwrap_or_default();
            Exposure::Ingress(IngressPlan {
                class_name: spec.class_name.or(config.ingress_class.clone()),
                host,
                path: format!("{prefix}/{namespace}/{name}/"),
                tls_secret_name,
                origin: format!("{scheme}://{authority}"),
            })
        }
    })
}

impl Exposure {
    /// The type of the session's Service.
    pub fn service_type(&self) -> &'static str {
        match self {
            Exposure::NodePort => "NodePort",
            Exposure::LoadBalancer => "LoadBalancer",
            Exposure::ClusterIp | Exposure::Ingress(_) => "ClusterIP",
        }
    }

    /// The console URL, with the access token in the fragment, or what it is
    /// still waiting for.
    pub fn url(
        &self,
        service: &Service,
        pod: &Pod,
        node_address: Option<&str>,
        token: &str,
    ) -> Result<String, &'static str> {
        let origin = match self {
            Exposure::ClusterIp => {
                let ip = service
                    .spec
                    .as_ref()
                    .and_then(|s| s.cluster_ip.as_deref())
                    .filter(|ip| !ip.is_empty() && *ip != "None")
                    .ok_or("waiting for the Service's cluster IP")?;
                http_origin(ip, SERVICE_PORT)
            }
            Exposure::NodePort => {
                let port = service
                    .spec
                    .as_ref()
                    .and_then(|s| s.ports.as_ref()?.first()?.node_port)
                    .ok_or("waiting for the Service's node port")?;
                let node = node_address
                    .or_else(|| pod.status.as_ref()?.host_ip.as_deref())
                    .ok_or("waiting for the proxy pod's node")?;
                http_origin(node, u16::try_from(port).unwrap_or_default())
            }
            Exposure::LoadBalancer => {
                let ingress = service
                    .status
                    .as_ref()
                    .and_then(|s| s.load_balancer.as_ref()?.ingress.as_ref()?.first().cloned())
                    .ok_or("waiting for the load balancer's address")?;
                let address = ingress
                    .hostname
                    .or(ingress.ip)
                    .ok_or("waiting for the load balancer's address")?;
                http_origin(&address, SERVICE_PORT)
            }
            Exposure::Ingress(plan) => {
                return Ok(format!("{}{}#token={token}", plan.origin, plan.path));
            }
        };
        Ok(format!("{origin}/#token={token}"))
    }
}

/// `http://host[:port]`, an IPv6 address in brackets, port 80 left out.
pub fn http_origin(host: &str, port: u16) -> String {
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    match port {
        80 => format!("http://{host}"),
        port => format!("http://{host}:{port}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        LoadBalancerIngress, LoadBalancerStatus, PodStatus, ServicePort, ServiceSpec, ServiceStatus,
    };
    use porthole_api::v1alpha1::IngressExpose;

    fn config(args: &[&str]) -> Config {
        use clap::Parser;
        Config::parse_from(std::iter::once("porthole-operator").chain(args.iter().copied()))
    }

    fn expose(type_: ExposeType, ingress: Option<IngressExpose>) -> Expose {
        Expose {
            type_: Some(type_),
            ingress,
        }
    }

    fn service(
        cluster_ip: &str,
        node_port: Option<i32>,
        lb: Option<LoadBalancerIngress>,
    ) -> Service {
        Service {
            spec: Some(ServiceSpec {
                cluster_ip: Some(cluster_ip.into()),
                ports: Some(vec![ServicePort {
                    port: 80,
                    node_port,
                    ..ServicePort::default()
                }]),
                ..ServiceSpec::default()
            }),
            status: Some(ServiceStatus {
                load_balancer: Some(LoadBalancerStatus {
                    ingress: lb.map(|i| vec![i]),
                }),
                ..ServiceStatus::default()
            }),
            ..Service::default()
        }
    }

    fn pod_on(host_ip: &str) -> Pod {
        Pod {
            status: Some(PodStatus {
                host_ip: Some(host_ip.into()),
                ..PodStatus::default()
            }),
            ..Pod::default()
        }
    }

    #[test]
    fn base_urls_are_parsed_strictly() {
        let base: BaseUrl = "https://Consoles.Example.com:8443/porthole/"
            .parse()
            .unwrap();
        assert_eq!(base.scheme, "https");
        assert_eq!(base.authority, "consoles.example.com:8443");
        assert_eq!(base.host, "consoles.example.com");
        assert_eq!(base.path, "/porthole");
        for bad in [
            "consoles.example.com",
            "ftp://x",
            "https://x/?a=b",
            "https://u@x/",
            "/path",
        ] {
            assert!(bad.parse::<BaseUrl>().is_err(), "{bad}");
        }
    }

    /// Found by fuzzing (fuzz/fuzz_targets/addresses.rs): a port that is no
    /// number, text between `]` and the port, or a name in brackets went
    /// into every console URL.
    #[test]
    fn base_url_ports_are_numbers() {
        for bad in [
            "https://[fd00::1]:8006.",
            "https://consoles.example.com:84a3/",
            "http://x:",
            "https://[U]8:006/",
            "https://[fd00::1]8:443",
            "https://[consoles.example.com]/",
        ] {
            assert!(bad.parse::<BaseUrl>().is_err(), "{bad}");
        }
        let base: BaseUrl = "https://[fd00::1]:8443".parse().unwrap();
        assert_eq!(base.authority, "[fd00::1]:8443");
    }

    #[test]
    fn the_default_is_the_operators_and_the_session_may_choose() {
        let cfg = config(&[
            "--expose",
            "NodePort",
            "--allowed-expose-types",
            "LoadBalancer",
        ]);
        assert_eq!(resolve(None, &cfg, "ns", "s"), Ok(Exposure::NodePort));
        let lb = expose(ExposeType::LoadBalancer, None);
        assert_eq!(
            resolve(Some(&lb), &cfg, "ns", "s"),
            Ok(Exposure::LoadBalancer)
        );
        assert_eq!(
            resolve(None, &config(&[]), "ns", "s"),
            Ok(Exposure::ClusterIp)
        );
    }

    #[test]
    fn ingress_takes_host_and_prefix_from_the_base_url() {
        let cfg = config(&[
            "--base-url",
            "https://consoles.example.com/vm",
            "--ingress-class",
            "nginx",
        ]);
        let exposure = resolve(
            Some(&expose(ExposeType::Ingress, None)),
            &cfg,
            "team-a",
            "web",
        )
        .unwrap();
        let Exposure::Ingress(plan) = &exposure else {
            panic!("{exposure:?}")
        };
        assert_eq!(plan.host, "consoles.example.com");
        assert_eq!(plan.path, "/vm/team-a/web/");
        assert_eq!(plan.class_name.as_deref(), Some("nginx"));
        assert_eq!(
            exposure.url(&Service::default(), &Pod::default(), None, "T"),
            Ok("https://consoles.example.com/vm/team-a/web/#token=T".into())
        );
        assert_eq!(exposure.service_type(), "ClusterIP");
    }

    #[test]
    fn the_sessions_ingress_settings_win_and_tls_makes_https() {
        let cfg = config(&[
            "--base-url",
            "http://lab.local",
            "--ingress-class",
            "nginx",
            "--allowed-ingress-classes",
            "traefik",
            "--allowed-ingress-hosts",
            "*.example.org",
            "--allowed-ingress-tls-secrets",
            "vm-tls",
        ]);
        let spec = expose(
            ExposeType::Ingress,
            Some(IngressExpose {
                class_name: Some("traefik".into()),
                host: Some("vm.example.org".into()),
                tls_secret_name: Some("vm-tls".into()),
            }),
        );
        let exposure = resolve(Some(&spec), &cfg, "ns", "s").unwrap();
        assert_eq!(
            exposure,
            Exposure::Ingress(IngressPlan {
                class_name: Some("traefik".into()),
                host: "vm.example.org".into(),
                path: "/ns/s/".into(),
                tls_secret_name: Some("vm-tls".into()),
                origin: "https://vm.example.org".into(),
            })
        );
    }

    #[test]
    fn plaintext_outside_the_cluster_is_refused_unless_the_administrator_allows_it() {
        for type_ in [ExposeType::NodePort, ExposeType::LoadBalancer] {
            let error = resolve(Some(&expose(type_, None)), &config(&[]), "ns", "s").unwrap_err();
            assert!(error.is_policy());
            let text = error.to_string();
            assert!(text.contains(&format!("{type_:?}")), "{text}");
            assert!(text.contains("allowed: ClusterIP"), "{text}");
        }
        let cfg = config(&["--allowed-expose-types", "NodePort,LoadBalancer"]);
        let lb = expose(ExposeType::LoadBalancer, None);
        assert_eq!(
            resolve(Some(&lb), &cfg, "ns", "s"),
            Ok(Exposure::LoadBalancer)
        );
    }

    #[test]
    fn ingress_class_host_and_tls_secret_must_be_the_administrators() {
        let cfg = config(&[
            "--base-url",
            "https://consoles.example.com",
            "--allowed-expose-types",
            "Ingress",
            "--allowed-ingress-hosts",
            "*.lab.example.com",
        ]);
        let asking = |class: Option<&str>, host: Option<&str>, tls: Option<&str>| {
            let spec = expose(
                ExposeType::Ingress,
                Some(IngressExpose {
                    class_name: class.map(Into::into),
                    host: host.map(Into::into),
                    tls_secret_name: tls.map(Into::into),
                }),
            );
            resolve(Some(&spec), &cfg, "ns", "s").map_err(|e| e.to_string())
        };
        let class = asking(Some("public"), None, None).unwrap_err();
        assert!(class.contains("className \"public\""), "{class}");
        let host = asking(None, Some("bank.example.com"), None).unwrap_err();
        assert!(host.contains("host \"bank.example.com\""), "{host}");
        assert!(
            host.contains("consoles.example.com, *.lab.example.com"),
            "{host}"
        );
        let deeper = asking(None, Some("a.b.lab.example.com"), None).unwrap_err();
        assert!(deeper.contains("host"), "{deeper}");
        let tls = asking(None, None, Some("someone-elses-cert")).unwrap_err();
        assert!(tls.contains("tlsSecretName"), "{tls}");
        assert!(asking(None, Some("vm1.lab.example.com"), None).is_ok());
        assert!(asking(None, Some("consoles.example.com"), None).is_ok());
    }

    #[test]
    fn ingress_without_any_host_is_a_clear_error() {
        let spec = expose(ExposeType::Ingress, None);
        assert_eq!(
            resolve(Some(&spec), &config(&[]), "ns", "s"),
            Err(Error::NoIngressHost)
        );
    }

    #[test]
    fn service_urls_follow_the_service_type() {
        let svc = service("10.96.0.9", Some(30123), None);
        let pod = pod_on("192.168.1.5");
        assert_eq!(
            Exposure::ClusterIp.url(&svc, &pod, None, "T"),
            Ok("http://10.96.0.9/#token=T".into())
        );
        assert_eq!(
            Exposure::NodePort.url(&svc, &pod, None, "T"),
            Ok("http://192.168.1.5:30123/#token=T".into())
        );
        assert_eq!(
            Exposure::NodePort.url(&svc, &pod, Some("node.example"), "T"),
            Ok("http://node.example:30123/#token=T".into())
        );
        assert_eq!(
            Exposure::LoadBalancer.url(&svc, &pod, None, "T"),
            Err("waiting for the load balancer's address")
        );
        let lb = service(
            "10.96.0.9",
            Some(30123),
            Some(LoadBalancerIngress {
                ip: Some("203.0.113.7".into()),
                ..LoadBalancerIngress::default()
            }),
        );
        assert_eq!(
            Exposure::LoadBalancer.url(&lb, &pod, None, "T"),
            Ok("http://203.0.113.7/#token=T".into())
        );
        assert_eq!(
            Exposure::ClusterIp.url(&service("fd00::9", None, None), &pod, None, "T"),
            Ok("http://[fd00::9]/#token=T".into())
        );
    }
}
