//! Downward API field paths, for `env[].valueFrom.fieldRef` and `downwardAPI`
//! volume items.
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unsupported downward API field path {0:?}")]
pub struct UnsupportedFieldPath(pub String);

/// The addresses only the node knows when the container is created.
#[derive(Debug, Clone, Copy)]
pub struct Addresses<'a> {
    pub pod_ip: &'a str,
    pub host_ip: &'a str,
}

/// The value of `path` for `pod`, formatted as kubelet does.
pub fn field_value(
    pod: &Pod,
    addresses: Addresses<'_>,
    path: &str,
) -> Result<String, UnsupportedFieldPath> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let empty = BTreeMap::new();
    let labels = meta.labels.as_ref().unwrap_or(&empty);
    let annotations = meta.annotations.as_ref().unwrap_or(&empty);
    if let Some(key) = subscript(path, "metadata.labels") {
        return Ok(labels.get(key).cloned().unwrap_or_default());
    }
    if let Some(key) = subscript(path, "metadata.annotations") {
        return Ok(annotations.get(key).cloned().unwrap_or_default());
    }
    let value = match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "metadata.labels" => format_map(labels),
        "metadata.annotations" => format_map(annotations),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.podIP" | "status.podIPs" => addresses.pod_ip.to_owned(),
        "status.hostIP" | "status.hostIPs" => addresses.host_ip.to_owned(),
        _ => return Err(UnsupportedFieldPath(path.to_owned())),
    };
    Ok(value)
}

/// `metadata.labels['app']` → `app`.
fn subscript<'a>(path: &'a str, map: &str) -> Option<&'a str> {
    path.strip_prefix(map)?
        .strip_prefix("['")?
        .strip_suffix("']")
}

/// `key="value"` lines in key order, as kubelet's `FormatMap` (Go `%q` quoting).
fn format_map(map: &BTreeMap<String, String>) -> String {
    map.iter()
        .map(|(key, value)| format!("{key}={}", go_quote(value)))
        .collect::<Vec<_>>()
        .join("\n")
}

fn go_quote(value: &str) -> String {
    let mut quoted = String::with_capacity(value.len() + 2);
    quoted.push('"');
    for c in value.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            '\n' => quoted.push_str("\\n"),
            '\t' => quoted.push_str("\\t"),
            '\r' => quoted.push_str("\\r"),
            c if c.is_control() => quoted.push_str(&format!("\\u{:04x}", c as u32)),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> Pod {
        serde_yaml::from_str(
            r#"
metadata:
  name: web
  namespace: shop
  uid: 1234
  labels: {app: web, tier: "front\"end"}
  annotations: {note: hi}
spec:
  nodeName: node-a
  serviceAccountName: robot
  containers: []
"#,
        )
        .unwrap()
    }

    const ADDRESSES: Addresses<'static> = Addresses {
        pod_ip: "10.88.0.5",
        host_ip: "10.200.0.1",
    };

    #[test]
    fn resolves_every_supported_path() {
        let pod = pod();
        let cases = [
            ("metadata.name", "web"),
            ("metadata.namespace", "shop"),
            ("metadata.uid", "1234"),
            ("metadata.labels['app']", "web"),
            ("metadata.labels['missing']", ""),
            ("metadata.annotations['note']", "hi"),
            ("metadata.labels", "app=\"web\"\ntier=\"front\\\"end\""),
            ("spec.nodeName", "node-a"),
            ("spec.serviceAccountName", "robot"),
            ("status.podIP", "10.88.0.5"),
            ("status.hostIP", "10.200.0.1"),
        ];
        for (path, expected) in cases {
            assert_eq!(
                field_value(&pod, ADDRESSES, path).unwrap(),
                expected,
                "{path}"
            );
        }
    }

    #[test]
    fn rejects_unknown_paths() {
        assert_eq!(
            field_value(&pod(), ADDRESSES, "spec.hostname"),
            Err(UnsupportedFieldPath("spec.hostname".into()))
        );
    }
}
