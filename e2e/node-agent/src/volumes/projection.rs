//! The files of Secret, ConfigMap, downward API and projected volumes (pure).
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    ConfigMap, DownwardAPIVolumeFile, KeyToPath, Pod, ProjectedVolumeSource, Secret,
};

use super::atomic_writer::{FileProjection, Payload};
use crate::downward::{self, Addresses, UnsupportedFieldPath};

/// Kubernetes' default `defaultMode` (0644).
pub const DEFAULT_MODE: u32 = 0o644;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProjectionError {
    #[error("{kind} {name:?} not found")]
    NotFound { kind: &'static str, name: String },
    #[error("configured to use key {key} of {kind} {name:?}, which has no such key")]
    KeyMissing {
        kind: &'static str,
        name: String,
        key: String,
    },
    #[error(transparent)]
    FieldPath(#[from] UnsupportedFieldPath),
    #[error("unsupported projected source in this test node agent: {0}")]
    UnsupportedSource(&'static str),
    #[error("the token for {0} has not been requested")]
    MissingToken(String),
}

/// A Secret's or ConfigMap's data, and what the volume asks of it.
pub struct KeyedSource<'a> {
    pub kind: &'static str,
    pub name: &'a str,
    /// `None` when the object does not exist.
    pub data: Option<BTreeMap<&'a str, &'a [u8]>>,
    pub items: Option<&'a [KeyToPath]>,
    pub optional: bool,
}

impl<'a> KeyedSource<'a> {
    pub fn secret(name: &'a str, secret: Option<&'a Secret>) -> Self {
        let data = secret.map(|s| {
            s.data
                .iter()
                .flatten()
                .map(|(k, v)| (k.as_str(), v.0.as_slice()))
                .collect()
        });
        Self::new("secret", name, data)
    }

    pub fn config_map(name: &'a str, map: Option<&'a ConfigMap>) -> Self {
        let data = map.map(|m| {
            let text = m
                .data
                .iter()
                .flatten()
                .map(|(k, v)| (k.as_str(), v.as_bytes()));
            let binary = m
                .binary_data
                .iter()
                .flatten()
                .map(|(k, v)| (k.as_str(), v.0.as_slice()));
            text.chain(binary).collect()
        });
        Self::new("configmap", name, data)
    }

    fn new(kind: &'static str, name: &'a str, data: Option<BTreeMap<&'a str, &'a [u8]>>) -> Self {
        Self {
            kind,
            name,
            data,
            items: None,
            optional: false,
        }
    }

    pub fn with(mut self, items: Option<&'a [KeyToPath]>, optional: Option<bool>) -> Self {
        self.items = items;
        self.optional = optional.unwrap_or(false);
        self
    }

    /// Adds this source's files to `payload`: every key, or only `items`.
    pub fn project(&self, default_mode: u32, payload: &mut Payload) -> Result<(), ProjectionError> {
        let Some(data) = &self.data else {
            return if self.optional {
                Ok(())
            } else {
                Err(ProjectionError::NotFound {
                    kind: self.kind,
                    name: self.name.to_owned(),
                })
            };
        };
        let Some(items) = self.items.filter(|items| !items.is_empty()) else {
            for (key, value) in data {
                payload.insert((*key).to_owned(), file(value, default_mode));
            }
            return Ok(());
        };
        for item in items {
            match data.get(item.key.as_str()) {
                Some(value) => {
                    let mode = item.mode.map_or(default_mode, mode_bits);
                    payload.insert(item.path.clone(), file(value, mode));
                }
                None if self.optional => {}
                None => {
                    return Err(ProjectionError::KeyMissing {
                        kind: self.kind,
                        name: self.name.to_owned(),
                        key: item.key.clone(),
                    });
                }
            }
        }
        Ok(())
    }
}

/// Adds downward API items to `payload`.
pub fn project_downward(
    items: &[DownwardAPIVolumeFile],
    pod: &Pod,
    addresses: Addresses<'_>,
    default_mode: u32,
    payload: &mut Payload,
) -> Result<(), ProjectionError> {
    for item in items {
        let Some(field) = &item.field_ref else {
            return Err(ProjectionError::UnsupportedSource(
                "downwardAPI resourceFieldRef",
            ));
        };
        let value = downward::field_value(pod, addresses, &field.field_path)?;
        let mode = item.mode.map_or(default_mode, mode_bits);
        payload.insert(item.path.clone(), file(value.as_bytes(), mode));
    }
    Ok(())
}

/// Objects and tokens a projected volume reads.
pub struct ProjectedInputs<'a> {
    pub pod: &'a Pod,
    pub addresses: Addresses<'a>,
    pub secret: &'a dyn Fn(&str) -> Option<&'a Secret>,
    pub config_map: &'a dyn Fn(&str) -> Option<&'a ConfigMap>,
    /// Service account tokens by the path they are projected to.
    pub tokens: &'a BTreeMap<String, String>,
}

/// The files of a projected volume (the `kube-api-access-*` volume is one).
pub fn projected_payload(
    source: &ProjectedVolumeSource,
    inputs: &ProjectedInputs<'_>,
) -> Result<Payload, ProjectionError> {
    let default_mode = source.default_mode.map_or(DEFAULT_MODE, mode_bits);
    let mut payload = Payload::new();
    for projection in source.sources.iter().flatten() {
        if let Some(secret) = &projection.secret {
            KeyedSource::secret(&secret.name, (inputs.secret)(&secret.name))
                .with(secret.items.as_deref(), secret.optional)
                .project(default_mode, &mut payload)?;
        }
        if let Some(map) = &projection.config_map {
            KeyedSource::config_map(&map.name, (inputs.config_map)(&map.name))
                .with(map.items.as_deref(), map.optional)
                .project(default_mode, &mut payload)?;
        }
        if let Some(downward_api) = &projection.downward_api {
            let items = downward_api.items.as_deref().unwrap_or_default();
            project_downward(
                items,
                inputs.pod,
                inputs.addresses,
                default_mode,
                &mut payload,
            )?;
        }
        if let Some(token) = &projection.service_account_token {
            let value = inputs
                .tokens
                .get(&token.path)
                .ok_or_else(|| ProjectionError::MissingToken(token.path.clone()))?;
            payload.insert(token.path.clone(), file(value.as_bytes(), default_mode));
        }
        if projection.cluster_trust_bundle.is_some() {
            return Err(ProjectionError::UnsupportedSource("clusterTrustBundle"));
        }
        if projection.pod_certificate.is_some() {
            return Err(ProjectionError::UnsupportedSource("podCertificate"));
        }
    }
    Ok(payload)
}

/// API modes are decimal integers holding permission bits.
pub fn mode_bits(mode: i32) -> u32 {
    (mode as u32) & 0o7777
}

fn file(data: &[u8], mode: u32) -> FileProjection {
    FileProjection {
        data: data.to_vec(),
        mode,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod_with_api_access() -> Pod {
        // What ServiceAccount admission injects as `kube-api-access-*`.
        serde_yaml::from_str(
            r#"
metadata: {name: op, namespace: porthole, uid: u-1}
spec:
  serviceAccountName: operator
  containers: [{name: op}]
  volumes:
  - name: kube-api-access-abcde
    projected:
      defaultMode: 420
      sources:
      - serviceAccountToken: {expirationSeconds: 3607, path: token}
      - configMap:
          name: kube-root-ca.crt
          items: [{key: ca.crt, path: ca.crt}]
      - downwardAPI:
          items:
          - path: namespace
            fieldRef: {apiVersion: v1, fieldPath: metadata.namespace}
"#,
        )
        .unwrap()
    }

    #[test]
    fn kube_api_access_volume() {
        let pod = pod_with_api_access();
        let root_ca: ConfigMap =
            serde_yaml::from_str("metadata: {name: kube-root-ca.crt}\ndata: {ca.crt: PEM}")
                .unwrap();
        let tokens = BTreeMap::from([("token".to_owned(), "jwt".to_owned())]);
        let secret = |_: &str| None;
        let config_map = |name: &str| (name == "kube-root-ca.crt").then_some(&root_ca);
        let inputs = ProjectedInputs {
            pod: &pod,
            addresses: Addresses {
                pod_ip: "",
                host_ip: "",
            },
            secret: &secret,
            config_map: &config_map,
            tokens: &tokens,
        };
        let volume = &pod.spec.as_ref().unwrap().volumes.as_ref().unwrap()[0];
        let payload = projected_payload(volume.projected.as_ref().unwrap(), &inputs).unwrap();
        let files: BTreeMap<&str, (&[u8], u32)> = payload
            .iter()
            .map(|(p, f)| (p.as_str(), (f.data.as_slice(), f.mode)))
            .collect();
        assert_eq!(
            files,
            BTreeMap::from([
                ("ca.crt", (b"PEM".as_slice(), 0o644)),
                ("namespace", (b"porthole".as_slice(), 0o644)),
                ("token", (b"jwt".as_slice(), 0o644)),
            ])
        );
    }

    #[test]
    fn secret_items_modes_and_optional() {
        let secret: Secret =
            serde_yaml::from_str("metadata: {name: tls}\ndata: {tls.crt: Y3J0, tls.key: a2V5}")
                .unwrap();
        let items: Vec<KeyToPath> =
            serde_yaml::from_str("[{key: tls.key, path: private/key.pem, mode: 256}]").unwrap();

        let mut all = Payload::new();
        KeyedSource::secret("tls", Some(&secret))
            .project(0o440, &mut all)
            .unwrap();
        assert_eq!(all["tls.crt"].data, b"crt");
        assert_eq!(all["tls.key"].mode, 0o440);

        let mut picked = Payload::new();
        KeyedSource::secret("tls", Some(&secret))
            .with(Some(&items), None)
            .project(0o644, &mut picked)
            .unwrap();
        assert_eq!(picked.len(), 1);
        assert_eq!(picked["private/key.pem"].mode, 0o400);
        assert_eq!(picked["private/key.pem"].data, b"key");

        let mut none = Payload::new();
        KeyedSource::secret("gone", None)
            .with(None, Some(true))
            .project(0o644, &mut none)
            .unwrap();
        assert!(none.is_empty());
        let missing = KeyedSource::secret("gone", None).project(0o644, &mut none);
        assert_eq!(
            missing.unwrap_err().to_string(),
            r#"secret "gone" not found"#
        );
    }
}
