//! A container's environment, resolved the way kubelet resolves it
//! (`makeEnvironmentVariables`):
//!
//! 1. `envFrom` sources, in order, later keys replacing earlier ones;
//! 2. `env` in declaration order: a `value` has its `$(VAR)` references expanded
//!    against the variables defined so far and the service variables; a
//!    `valueFrom` is resolved and never expanded;
//! 3. service variables not already defined.
//!
//! `command` and `args` are then expanded against the result.
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, Container, EnvVarSource, Pod, Secret};

use crate::downward::{self, Addresses, UnsupportedFieldPath};
use crate::expansion::expand;

/// Read access to the Secrets and ConfigMaps of the cluster.
pub trait ObjectLookup: Send + Sync {
    fn secret(&self, namespace: &str, name: &str) -> Option<Arc<Secret>>;
    fn config_map(&self, namespace: &str, name: &str) -> Option<Arc<ConfigMap>>;
}

/// Why a container cannot be configured yet (kubelet: `CreateContainerConfigError`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    #[error("{kind} {name:?} not found")]
    NotFound { kind: &'static str, name: String },
    #[error("couldn't find key {key} in {kind} {namespace}/{name}")]
    KeyMissing {
        kind: &'static str,
        namespace: String,
        name: String,
        key: String,
    },
    #[error(transparent)]
    FieldPath(#[from] UnsupportedFieldPath),
    #[error("env {0}: resourceFieldRef is not supported by the test node agent")]
    ResourceFieldRef(String),
}

/// What resolution needs besides the container.
pub struct EnvContext<'a> {
    pub pod: &'a Pod,
    pub addresses: Addresses<'a>,
    pub objects: &'a dyn ObjectLookup,
    pub service_env: &'a BTreeMap<String, String>,
}

/// Name/value pairs keeping first-definition order, later definitions replacing
/// the value in place.
#[derive(Debug, Default)]
struct OrderedEnv {
    entries: Vec<(String, String)>,
    index: HashMap<String, usize>,
}

impl OrderedEnv {
    fn set(&mut self, name: String, value: String) {
        match self.index.get(&name) {
            Some(&at) => self.entries[at].1 = value,
            None => {
                self.index.insert(name.clone(), self.entries.len());
                self.entries.push((name, value));
            }
        }
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.index.get(name).map(|&at| self.entries[at].1.as_str())
    }
}

/// The container's final environment.
pub fn resolve(
    container: &Container,
    ctx: &EnvContext<'_>,
) -> Result<Vec<(String, String)>, EnvError> {
    let namespace = ctx.pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut env = OrderedEnv::default();

    for source in container.env_from.iter().flatten() {
        let prefix = source.prefix.as_deref().unwrap_or("");
        if let Some(reference) = &source.config_map_ref {
            let optional = reference.optional.unwrap_or(false);
            match ctx.objects.config_map(namespace, &reference.name) {
                Some(map) => {
                    for (key, value) in map.data.iter().flatten() {
                        env.set(format!("{prefix}{key}"), value.clone());
                    }
                }
                None if optional => {}
                None => return Err(not_found("configmap", &reference.name)),
            }
        }
        if let Some(reference) = &source.secret_ref {
            let optional = reference.optional.unwrap_or(false);
            match ctx.objects.secret(namespace, &reference.name) {
                Some(secret) => {
                    for (key, value) in secret.data.iter().flatten() {
                        env.set(format!("{prefix}{key}"), lossy(&value.0));
                    }
                }
                None if optional => {}
                None => return Err(not_found("secret", &reference.name)),
            }
        }
    }

    for var in container.env.iter().flatten() {
        let value = match (&var.value, &var.value_from) {
            (Some(value), _) if !value.is_empty() => expand(value, |name| {
                env.get(name).or_else(|| service_var(ctx, name))
            }),
            (_, Some(source)) => match resolve_source(&var.name, source, namespace, ctx)? {
                Some(value) => value,
                None => continue,
            },
            _ => String::new(),
        };
        env.set(var.name.clone(), value);
    }

    for (name, value) in ctx.service_env {
        if env.get(name).is_none() {
            env.set(name.clone(), value.clone());
        }
    }
    Ok(env.entries)
}

/// `command` and `args` with `$(VAR)` references expanded against `env`.
pub fn expand_command(
    container: &Container,
    env: &[(String, String)],
) -> (Option<Vec<String>>, Vec<String>) {
    let vars: HashMap<&str, &str> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let expand_all = |words: &Vec<String>| -> Vec<String> {
        words
            .iter()
            .map(|word| expand(word, |name| vars.get(name).copied()))
            .collect()
    };
    let command = container
        .command
        .as_ref()
        .filter(|c| !c.is_empty())
        .map(expand_all);
    let args = container.args.as_ref().map(expand_all).unwrap_or_default();
    (command, args)
}

fn service_var<'a>(ctx: &'a EnvContext<'_>, name: &str) -> Option<&'a str> {
    ctx.service_env.get(name).map(String::as_str)
}

/// `Ok(None)`: an optional source that does not exist, so the variable is skipped.
fn resolve_source(
    var: &str,
    source: &EnvVarSource,
    namespace: &str,
    ctx: &EnvContext<'_>,
) -> Result<Option<String>, EnvError> {
    if let Some(field) = &source.field_ref {
        return Ok(Some(downward::field_value(
            ctx.pod,
            ctx.addresses,
            &field.field_path,
        )?));
    }
    if let Some(key_ref) = &source.secret_key_ref {
        let optional = key_ref.optional.unwrap_or(false);
        let Some(secret) = ctx.objects.secret(namespace, &key_ref.name) else {
            return if optional {
                Ok(None)
            } else {
                Err(not_found("secret", &key_ref.name))
            };
        };
        return match secret.data.as_ref().and_then(|d| d.get(&key_ref.key)) {
            Some(value) => Ok(Some(lossy(&value.0))),
            None if optional => Ok(None),
            None => Err(key_missing(
                "Secret",
                namespace,
                &key_ref.name,
                &key_ref.key,
            )),
        };
    }
    if let Some(key_ref) = &source.config_map_key_ref {
        let optional = key_ref.optional.unwrap_or(false);
        let Some(map) = ctx.objects.config_map(namespace, &key_ref.name) else {
            return if optional {
                Ok(None)
            } else {
                Err(not_found("configmap", &key_ref.name))
            };
        };
        return match map.data.as_ref().and_then(|d| d.get(&key_ref.key)) {
            Some(value) => Ok(Some(value.clone())),
            None if optional => Ok(None),
            None => Err(key_missing(
                "ConfigMap",
                namespace,
                &key_ref.name,
                &key_ref.key,
            )),
        };
    }
    if source.resource_field_ref.is_some() {
        return Err(EnvError::ResourceFieldRef(var.to_owned()));
    }
    Ok(Some(String::new()))
}

fn not_found(kind: &'static str, name: &str) -> EnvError {
    EnvError::NotFound {
        kind,
        name: name.to_owned(),
    }
}

fn key_missing(kind: &'static str, namespace: &str, name: &str, key: &str) -> EnvError {
    EnvError::KeyMissing {
        kind,
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        key: key.to_owned(),
    }
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Secrets and ConfigMaps of one namespace, from YAML fixtures.
    #[derive(Default)]
    pub(crate) struct Objects {
        pub secrets: HashMap<String, Arc<Secret>>,
        pub config_maps: HashMap<String, Arc<ConfigMap>>,
    }

    impl ObjectLookup for Objects {
        fn secret(&self, _namespace: &str, name: &str) -> Option<Arc<Secret>> {
            self.secrets.get(name).cloned()
        }
        fn config_map(&self, _namespace: &str, name: &str) -> Option<Arc<ConfigMap>> {
            self.config_maps.get(name).cloned()
        }
    }

    pub(crate) fn objects() -> Objects {
        let secret: Secret =
            serde_yaml::from_str("metadata: {name: creds}\ndata: {password: aHVudGVyMg==}")
                .unwrap();
        let config: ConfigMap =
            serde_yaml::from_str("metadata: {name: settings}\ndata: {mode: fast, level: '3'}")
                .unwrap();
        Objects {
            secrets: [("creds".to_owned(), Arc::new(secret))].into(),
            config_maps: [("settings".to_owned(), Arc::new(config))].into(),
        }
    }

    fn pod(containers: &str) -> Pod {
        let mut pod: Pod = serde_yaml::from_str(
            "metadata: {name: web, namespace: shop, uid: u-1, labels: {app: web}}\n\
             spec: {nodeName: node-a, containers: []}",
        )
        .unwrap();
        pod.spec.as_mut().unwrap().containers = serde_yaml::from_str(containers).unwrap();
        pod
    }

    fn resolve_first(pod: &Pod, objects: &Objects) -> Result<Vec<(String, String)>, EnvError> {
        let service_env = BTreeMap::from([
            ("KUBERNETES_SERVICE_HOST".to_owned(), "10.96.0.1".to_owned()),
            ("OVERRIDDEN".to_owned(), "service".to_owned()),
        ]);
        let ctx = EnvContext {
            pod,
            addresses: Addresses {
                pod_ip: "10.88.0.9",
                host_ip: "10.200.0.1",
            },
            objects,
            service_env: &service_env,
        };
        resolve(&pod.spec.as_ref().unwrap().containers[0], &ctx)
    }

    fn as_map(env: &[(String, String)]) -> BTreeMap<&str, &str> {
        env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
    }

    #[test]
    fn resolves_sources_in_kubelet_order() {
        let pod = pod(r#"
- name: app
  envFrom:
  - configMapRef: {name: settings}
    prefix: CFG_
  env:
  - {name: PASSWORD, valueFrom: {secretKeyRef: {name: creds, key: password}}}
  - {name: MODE, valueFrom: {configMapKeyRef: {name: settings, key: mode}}}
  - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
  - {name: POD_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
  - {name: APP, valueFrom: {fieldRef: {fieldPath: "metadata.labels['app']"}}}
  - {name: URL, value: "https://$(KUBERNETES_SERVICE_HOST)/$(POD_NAME)/$(LATER)/$$(MODE)"}
  - {name: LATER, value: x}
  - {name: CFG_level, value: "$(CFG_level)0"}
  - {name: OVERRIDDEN, value: container}
  - {name: SECRET_NOT_EXPANDED, valueFrom: {secretKeyRef: {name: creds, key: password}}}
"#);
        let env = resolve_first(&pod, &objects()).unwrap();
        let map = as_map(&env);
        assert_eq!(map["PASSWORD"], "hunter2");
        assert_eq!(map["MODE"], "fast");
        assert_eq!(map["CFG_mode"], "fast");
        assert_eq!(map["CFG_level"], "30");
        assert_eq!(map["POD_NAME"], "web");
        assert_eq!(map["POD_IP"], "10.88.0.9");
        assert_eq!(map["APP"], "web");
        assert_eq!(map["URL"], "https://10.96.0.1/web/$(LATER)/$(MODE)");
        assert_eq!(map["OVERRIDDEN"], "container");
        assert_eq!(map["KUBERNETES_SERVICE_HOST"], "10.96.0.1");
        // envFrom first, then env in declaration order, then service variables.
        let names: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(&names[..3], ["CFG_level", "CFG_mode", "PASSWORD"]);
        assert_eq!(names.last(), Some(&"KUBERNETES_SERVICE_HOST"));
    }

    #[test]
    fn optional_sources_may_be_missing() {
        let pod = pod(r#"
- name: app
  env:
  - {name: A, valueFrom: {secretKeyRef: {name: nope, key: k, optional: true}}}
  - {name: B, valueFrom: {secretKeyRef: {name: creds, key: nope, optional: true}}}
  - {name: C, valueFrom: {configMapKeyRef: {name: nope, key: k, optional: true}}}
  envFrom:
  - secretRef: {name: nope, optional: true}
"#);
        let env = resolve_first(&pod, &objects()).unwrap();
        let map = as_map(&env);
        assert!(!map.contains_key("A") && !map.contains_key("B") && !map.contains_key("C"));
    }

    #[test]
    fn required_sources_must_exist() {
        let missing_secret =
            pod("[{name: app, env: [{name: A, valueFrom: {secretKeyRef: {name: nope, key: k}}}]}]");
        assert_eq!(
            resolve_first(&missing_secret, &objects())
                .unwrap_err()
                .to_string(),
            r#"secret "nope" not found"#
        );
        let missing_key = pod(
            "[{name: app, env: [{name: A, valueFrom: {configMapKeyRef: {name: settings, key: k}}}]}]",
        );
        assert_eq!(
            resolve_first(&missing_key, &objects())
                .unwrap_err()
                .to_string(),
            "couldn't find key k in ConfigMap shop/settings"
        );
    }

    #[test]
    fn command_and_args_expand_against_the_final_env() {
        let container: Container = serde_yaml::from_str(
            r#"{name: app, command: ["/bin/$(TOOL)"], args: ["--port=$(PORT)", "$(NOPE)", "$$(PORT)"]}"#,
        )
        .unwrap();
        let env = vec![
            ("TOOL".to_owned(), "serve".to_owned()),
            ("PORT".to_owned(), "8080".to_owned()),
        ];
        let (command, args) = expand_command(&container, &env);
        assert_eq!(command, Some(vec!["/bin/serve".to_owned()]));
        assert_eq!(args, ["--port=8080", "$(NOPE)", "$(PORT)"]);
    }

    #[test]
    fn empty_command_keeps_the_image_entrypoint() {
        let container: Container =
            serde_yaml::from_str(r#"{name: app, command: [], args: ["x"]}"#).unwrap();
        assert_eq!(
            expand_command(&container, &[]),
            (None, vec!["x".to_owned()])
        );
    }
}
