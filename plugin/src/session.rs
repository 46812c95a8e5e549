//! The ConsoleSession the plugin creates: its name and its spec.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use porthole_api::v1alpha1::{
    ConsoleSession, ConsoleSessionSpec, Record, ViewerPolicy, Viewers, VmRef,
};
use rand::Rng;

use crate::vm::VmArg;

/// The label every session created by the plugin carries.
pub const CREATED_BY_LABEL: &str = "app.kubernetes.io/created-by";
/// Its value: this plugin.
pub const CREATED_BY: &str = "kubectl-console";

/// Generated names start with this.
const NAME_PREFIX: &str = "console-";
/// Characters of the random suffix: the API server's own `generateName`
/// alphabet, without vowels (no words) and without look-alikes (0/o, 1/l, 3/e).
const SUFFIX_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
const SUFFIX_LEN: usize = 5;
/// Generated names stay DNS labels, readable in `kubectl get`.
const MAX_GENERATED_LEN: usize = 63;
/// An object name is a DNS subdomain.
const MAX_NAME_LEN: usize = 253;

/// What the user asked the session to be.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SessionOptions {
    pub hypervisor: String,
    pub vm: VmRef,
    pub timeout: Option<String>,
    pub connect_timeout: Option<String>,
    pub idle_timeout: Option<String>,
    pub view_only: bool,
    pub shared: bool,
    pub run_once: bool,
    /// Record viewer connections (`spec.record`).
    pub record: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NameError {
    #[error("{what} {name:?} is not a valid Kubernetes name: {why}")]
    Invalid {
        what: &'static str,
        name: String,
        why: &'static str,
    },
}

/// The ConsoleSession for `options`, named `name` in `namespace`, labelled as
/// created by this plugin.
pub fn build(name: &str, namespace: &str, options: &SessionOptions) -> ConsoleSession {
    let viewers = (options.view_only || options.shared).then(|| Viewers {
        policy: options.shared.then_some(ViewerPolicy::Shared),
        view_only: options.view_only.then_some(true),
    });
    let mut spec = base_spec(&options.hypervisor);
    spec.vm = options.vm.clone();
    spec.timeout = options.timeout.clone();
    spec.connect_timeout = options.connect_timeout.clone();
    spec.idle_timeout = options.idle_timeout.clone();
    spec.run_once = options.run_once.then_some(true);
    spec.viewers = viewers;
    spec.record = options.record.then(Record::default);
    let mut session = ConsoleSession::new(name, spec);
    session.metadata = ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some(namespace.to_string()),
        labels: Some(BTreeMap::from([(
            CREATED_BY_LABEL.to_string(),
            CREATED_BY.to_string(),
        )])),
        ..ObjectMeta::default()
    };
    session
}

/// A spec naming only the Hypervisor, every optional field unset. Built through
/// serde rather than a struct literal, so that optional fields the API gains
/// later stay unset here instead of breaking this crate's build.
fn base_spec(hypervisor: &str) -> ConsoleSessionSpec {
    serde_json::from_value(serde_json::json!({"hypervisor": hypervisor, "vm": {}}))
        .expect("hypervisor and vm are the only required fields of ConsoleSessionSpec")
}

/// `console-<vm>-<5 random characters>`, a valid DNS label: `console-5910-x7kqb`,
/// `console-pve1-101-b2n4z`.
pub fn generate_name(vm: &VmArg, rng: &mut impl Rng) -> String {
    let room = MAX_GENERATED_LEN - NAME_PREFIX.len() - 1 - SUFFIX_LEN;
    let vm_part: String = vm
        .name_part()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(room)
        .collect();
    let vm_part = vm_part.trim_matches('-');
    let suffix: String = (0..SUFFIX_LEN)
        .map(|_| char::from(SUFFIX_ALPHABET[rng.random_range(0..SUFFIX_ALPHABET.len())]))
        .collect();
    if vm_part.is_empty() {
        format!("{NAME_PREFIX}{suffix}")
    } else {
        format!("{NAME_PREFIX}{vm_part}-{suffix}")
    }
}

/// Checks `name` is a DNS subdomain (RFC 1123), as Kubernetes object names are:
/// lowercase letters, digits, '-' and '.', starting and ending alphanumeric.
pub fn validate_name(what: &'static str, name: &str) -> Result<(), NameError> {
    let invalid = |why| NameError::Invalid {
        what,
        name: name.to_string(),
        why,
    };
    if name.is_empty() {
        return Err(invalid("it is empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(invalid("it is longer than 253 characters"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    {
        return Err(invalid("use only lowercase letters, digits, '-' and '.'"));
    }
    let alnum = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if !alnum(name.bytes().next()) || !alnum(name.bytes().last()) {
        return Err(invalid("it must start and end with a letter or digit"));
    }
    if name
        .split('.')
        .any(|label| !alnum(label.bytes().next()) || !alnum(label.bytes().last()))
    {
        return Err(invalid(
            "each '.'-separated part must start and end with a letter or digit",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use porthole_api::v1alpha1::VmKind;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn options() -> SessionOptions {
        SessionOptions {
            hypervisor: "libvirt-demo".into(),
            vm: VmArg::Port(5910).to_vm_ref(None),
            ..SessionOptions::default()
        }
    }

    #[test]
    fn a_plain_session_sets_only_what_was_asked() {
        let session = build("console-5910-abcde", "team-a", &options());
        let json = serde_json::to_value(&session).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "apiVersion": "porthole.dev/v1alpha1",
                "kind": "ConsoleSession",
                "metadata": {
                    "name": "console-5910-abcde",
                    "namespace": "team-a",
                    "labels": {"app.kubernetes.io/created-by": "kubectl-console"}
                },
                "spec": {"hypervisor": "libvirt-demo", "vm": {"port": 5910}}
            })
        );
    }

    #[test]
    fn every_option_reaches_the_spec() {
        let options = SessionOptions {
            hypervisor: "pve".into(),
            vm: VmArg::Proxmox {
                node: "pve1".into(),
                id: 101,
            }
            .to_vm_ref(Some(VmKind::Lxc)),
            timeout: Some("30m".into()),
            connect_timeout: Some("2m".into()),
            idle_timeout: Some("10m".into()),
            view_only: true,
            shared: true,
            run_once: true,
            record: true,
        };
        let spec = serde_json::to_value(build("s", "ns", &options).spec).unwrap();
        assert_eq!(
            spec,
            serde_json::json!({
                "hypervisor": "pve",
                "vm": {"node": "pve1", "id": 101, "kind": "lxc"},
                "timeout": "30m",
                "connectTimeout": "2m",
                "idleTimeout": "10m",
                "runOnce": true,
                "viewers": {"policy": "shared", "viewOnly": true},
                "record": {}
            })
        );
    }

    #[test]
    fn view_only_alone_keeps_the_default_policy() {
        let options = SessionOptions {
            view_only: true,
            ..options()
        };
        let viewers = build("s", "ns", &options).spec.viewers.unwrap();
        assert_eq!(viewers.policy, None);
        assert_eq!(viewers.view_only, Some(true));
    }

    #[test]
    fn generated_names_name_the_vm_and_are_dns_labels() {
        let mut rng = StdRng::seed_from_u64(7);
        let port = generate_name(&VmArg::Port(5910), &mut rng);
        assert!(port.starts_with("console-5910-"), "{port}");
        assert_eq!(port.len(), "console-5910-".len() + 5);
        let guest = generate_name(
            &VmArg::Proxmox {
                node: "PVE-West".into(),
                id: 101,
            },
            &mut rng,
        );
        assert!(guest.starts_with("console-pve-west-101-"), "{guest}");
        let long = generate_name(
            &VmArg::Proxmox {
                node: format!("{}-x", "n".repeat(47)),
                id: 999_999_999,
            },
            &mut rng,
        );
        for name in [port, guest, long] {
            assert!(name.len() <= 63, "{name}");
            assert_eq!(validate_name("name", &name), Ok(()));
            assert!(!name.contains("--") && !name.contains('.'), "{name}");
        }
    }

    #[test]
    fn generated_names_differ() {
        let mut rng = StdRng::seed_from_u64(1);
        let names: std::collections::HashSet<_> = (0..100)
            .map(|_| generate_name(&VmArg::Port(5910), &mut rng))
            .collect();
        assert_eq!(names.len(), 100);
    }

    #[test]
    fn names_must_be_dns_subdomains() {
        for good in ["demo", "console-5910-abcde", "a.b-c", "0"] {
            assert_eq!(validate_name("--name", good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "Demo",
            "demo_1",
            "-demo",
            "demo-",
            "a..b",
            "a.-b",
            &"a".repeat(254),
        ] {
            let error = validate_name("--name", bad).unwrap_err();
            assert!(error.to_string().starts_with("--name "), "{error}");
        }
    }
}
