//! The Docker-link style variables kubelet gives every container for the
//! Services it can see (`KUBERNETES_SERVICE_HOST` and friends). Without them
//! in-cluster clients (kube-rs `Config::incluster()`) find no API server.
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Service;

/// Services kubelet always exposes, from the `default` namespace.
const MASTER_SERVICES: [&str; 1] = ["kubernetes"];

/// Variables for `services` as seen by a pod in `namespace`: the master
/// services always, the namespace's own ones when `service_links` is on.
pub fn service_env<'a>(
    services: impl IntoIterator<Item = &'a Service>,
    namespace: &str,
    service_links: bool,
) -> BTreeMap<String, String> {
    let mut visible: BTreeMap<&str, &Service> = BTreeMap::new();
    for service in services {
        let (Some(name), Some(service_ns)) = (&service.metadata.name, &service.metadata.namespace)
        else {
            continue;
        };
        if cluster_ip(service).is_none() {
            continue;
        }
        if service_ns == "default" && MASTER_SERVICES.contains(&name.as_str()) {
            visible.entry(name).or_insert(service);
        } else if service_ns == namespace && service_links {
            visible.insert(name, service);
        }
    }
    let mut env = BTreeMap::new();
    for (name, service) in visible {
        add_service_vars(&mut env, name, service);
    }
    env
}

fn cluster_ip(service: &Service) -> Option<&str> {
    let ip = service.spec.as_ref()?.cluster_ip.as_deref()?;
    (!ip.is_empty() && ip != "None").then_some(ip)
}

fn add_service_vars(env: &mut BTreeMap<String, String>, name: &str, service: &Service) {
    let (Some(ip), Some(ports)) = (
        cluster_ip(service),
        service.spec.as_ref().and_then(|s| s.ports.as_ref()),
    ) else {
        return;
    };
    let Some(first) = ports.first() else {
        return;
    };
    let prefix = variable_name(name);
    env.insert(format!("{prefix}_SERVICE_HOST"), ip.to_owned());
    env.insert(format!("{prefix}_SERVICE_PORT"), first.port.to_string());
    for port in ports {
        if let Some(port_name) = port.name.as_deref().filter(|n| !n.is_empty()) {
            let key = format!("{prefix}_SERVICE_PORT_{}", variable_name(port_name));
            env.insert(key, port.port.to_string());
        }
    }
    for (index, port) in ports.iter().enumerate() {
        let protocol = port.protocol.as_deref().unwrap_or("TCP");
        let lower = protocol.to_lowercase();
        let url = format!("{lower}://{ip}:{}", port.port);
        if index == 0 {
            env.insert(format!("{prefix}_PORT"), url.clone());
        }
        let port_prefix = format!("{prefix}_PORT_{}_{}", port.port, protocol.to_uppercase());
        env.insert(format!("{port_prefix}_PROTO"), lower);
        env.insert(format!("{port_prefix}_PORT"), port.port.to_string());
        env.insert(format!("{port_prefix}_ADDR"), ip.to_owned());
        env.insert(port_prefix, url);
    }
}

fn variable_name(name: &str) -> String {
    name.replace('-', "_").to_uppercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(namespace: &str, name: &str, ip: &str, ports: &str) -> Service {
        serde_yaml::from_str(&format!(
            "metadata: {{name: {name}, namespace: {namespace}}}\nspec: {{clusterIP: {ip}, ports: {ports}}}"
        ))
        .unwrap()
    }

    #[test]
    fn kubernetes_service_variables() {
        let services = [service(
            "default",
            "kubernetes",
            "10.96.0.1",
            "[{name: https, port: 443, protocol: TCP}]",
        )];
        let env = service_env(&services, "porthole", false);
        let expected = [
            ("KUBERNETES_PORT", "tcp://10.96.0.1:443"),
            ("KUBERNETES_PORT_443_TCP", "tcp://10.96.0.1:443"),
            ("KUBERNETES_PORT_443_TCP_ADDR", "10.96.0.1"),
            ("KUBERNETES_PORT_443_TCP_PORT", "443"),
            ("KUBERNETES_PORT_443_TCP_PROTO", "tcp"),
            ("KUBERNETES_SERVICE_HOST", "10.96.0.1"),
            ("KUBERNETES_SERVICE_PORT", "443"),
            ("KUBERNETES_SERVICE_PORT_HTTPS", "443"),
        ];
        let expected: BTreeMap<String, String> = expected
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(env, expected);
    }

    #[test]
    fn namespace_services_only_with_service_links() {
        let services = [
            service("shop", "web-api", "10.96.0.20", "[{port: 80}]"),
            service("other", "db", "10.96.0.21", "[{port: 5432}]"),
            service("shop", "headless", "None", "[{port: 80}]"),
        ];
        let env = service_env(&services, "shop", true);
        assert_eq!(env["WEB_API_SERVICE_HOST"], "10.96.0.20");
        assert_eq!(env["WEB_API_PORT"], "tcp://10.96.0.20:80");
        assert!(
            !env.keys()
                .any(|k| k.starts_with("DB_") || k.starts_with("HEADLESS_"))
        );
        assert!(service_env(&services, "shop", false).is_empty());
    }
}
