//! The command line: `kubectl console VM --hypervisor H ...` and
//! `kubectl console --delete NAME`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Parser};
use porthole_api::duration::{self, DurationError};
use porthole_api::v1alpha1::VmKind;

use crate::client::Connection;
use crate::output::OutputFormat;
use crate::session::{NameError, SessionOptions, validate_name};
use crate::vm::{VmArg, parse_kind};

/// The CRD's limit on a duration field's length.
const MAX_DURATION_LEN: usize = 32;

const EXAMPLES: &str = "\
Examples:
  # The console of the VM on VNC port 5910 of Hypervisor libvirt-demo, for 30 minutes
  kubectl console 5910 --hypervisor libvirt-demo --timeout 30m

  # Proxmox VE guest 101 on node pve1, opened in the browser, watch-only
  kubectl console pve1/101 --hypervisor pve --view-only --open

  # A container's terminal, in namespace team-a
  kubectl console pve1/205 --kind lxc --hypervisor pve -n team-a

  # Keep the URL in a variable
  url=$(kubectl console 5910 --hypervisor libvirt-demo)

  # End a session
  kubectl console --delete console-5910-x7kqb

Exit status: 0 the URL is printed (or the session deleted); 1 the session failed,
expired or could not be created, or the API refused; 2 the command line is wrong.";

/// Open a VM's console in the browser: creates a porthole ConsoleSession, waits
/// until it is ready and prints its URL.
///
/// The URL goes to stdout, alone on its line; progress goes to stderr. The URL
/// carries the session's access token (in its #fragment): whoever has it can
/// open the console until the session ends.
#[derive(Debug, Parser)]
#[command(
    name = "kubectl-console",
    bin_name = "kubectl console",
    version,
    after_help = EXAMPLES,
    max_term_width = 100
)]
pub struct Cli {
    /// The VM: NODE/ID for a Proxmox VE Hypervisor (such as pve1/101), or the
    /// VNC PORT for a vnc Hypervisor (such as 5910).
    #[arg(value_name = "VM", value_parser = parse_vm, required_unless_present = "delete")]
    pub vm: Option<VmArg>,

    /// The Hypervisor that hosts the VM (`kubectl get hypervisors`).
    #[arg(long, value_name = "NAME", value_parser = hypervisor_name, required_unless_present = "delete")]
    pub hypervisor: Option<String>,

    /// The namespace of the session [default: the kubeconfig context's namespace].
    #[arg(short, long, value_name = "NAMESPACE", value_parser = namespace_name)]
    pub namespace: Option<String>,

    /// Proxmox guest kind: qemu (a virtual machine, default) or lxc (a
    /// container's terminal). Only with NODE/ID.
    #[arg(long, value_name = "qemu|lxc", value_parser = parse_kind)]
    pub kind: Option<VmKind>,

    /// Hard lifetime of the session, such as 30m or 1h30m [default: the
    /// Hypervisor's defaultTimeout].
    #[arg(long, value_name = "DURATION", value_parser = session_duration)]
    pub timeout: Option<String>,

    /// End the session if nobody opens the console this long after it is ready.
    #[arg(long, value_name = "DURATION", value_parser = session_duration)]
    pub connect_timeout: Option<String>,

    /// End the session after this long without keys or pointer input.
    #[arg(long, value_name = "DURATION", value_parser = session_duration)]
    pub idle_timeout: Option<String>,

    /// Viewers see the screen, but their keys and clicks never reach the VM.
    #[arg(long, action = ArgAction::SetTrue)]
    pub view_only: bool,

    /// Any number of viewers at once (default: one at a time).
    #[arg(long, action = ArgAction::SetTrue)]
    pub shared: bool,

    /// The first viewer's disconnect ends the session.
    #[arg(long, action = ArgAction::SetTrue)]
    pub run_once: bool,

    /// Record every viewer connection (spec.record), into the claim the
    /// administrator names for the Hypervisor.
    #[arg(long, action = ArgAction::SetTrue)]
    pub record: bool,

    /// Name of the session [default: console-<VM>-<5 random characters>].
    #[arg(long, value_name = "NAME", value_parser = session_name)]
    pub name: Option<String>,

    /// How long to wait for the session to become ready.
    #[arg(long, value_name = "DURATION", default_value = "2m", value_parser = wait_duration)]
    pub wait_timeout: Duration,

    /// Open the URL with $BROWSER (else xdg-open) once it is printed.
    #[arg(long, action = ArgAction::SetTrue)]
    pub open: bool,

    /// What to print once the session is ready.
    #[arg(short, long, value_enum, value_name = "FORMAT", default_value_t = OutputFormat::Url)]
    pub output: OutputFormat,

    /// End and delete session NAME instead of creating one.
    #[arg(
        long,
        value_name = "NAME",
        value_parser = session_name,
        conflicts_with_all = [
            "vm", "hypervisor", "kind", "timeout", "connect_timeout", "idle_timeout",
            "view_only", "shared", "run_once", "record", "name", "wait_timeout", "open",
            "output",
        ]
    )]
    pub delete: Option<String>,

    /// Path to the kubeconfig file [default: $KUBECONFIG, else ~/.kube/config].
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,

    /// The kubeconfig context to use [default: its current context].
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
}

/// What to do, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    pub connection: Connection,
    /// `None`: the kubeconfig context's namespace.
    pub namespace: Option<String>,
    pub action: Action,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    Create(Box<CreateRequest>),
    Delete { name: String },
}

/// A session to create and wait for.
#[derive(Clone, Debug, PartialEq)]
pub struct CreateRequest {
    pub vm: VmArg,
    /// `None`: generate one.
    pub name: Option<String>,
    pub session: SessionOptions,
    pub wait_timeout: Duration,
    pub open: bool,
    pub output: OutputFormat,
}

/// Command-line errors clap cannot see by itself (all usage errors: exit 2).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ArgError {
    #[error(transparent)]
    Duration(#[from] DurationError),
    #[error("duration {0:?} is too long: at most 32 characters, such as 1h30m")]
    DurationTooLong(String),
    #[error("--wait-timeout must be longer than 0s")]
    ZeroWait,
    #[error("--kind applies to Proxmox guests (NODE/ID, such as pve1/101), not to VNC port {0}")]
    KindWithPort(u16),
    #[error("give the VM and --hypervisor, or --delete NAME")]
    Missing,
}

impl Cli {
    /// The checked request. Fails only on combinations clap's rules cannot express.
    pub fn into_request(self) -> Result<Request, ArgError> {
        let connection = Connection {
            kubeconfig: self.kubeconfig,
            context: self.context,
        };
        let action = match (self.delete, self.vm, self.hypervisor) {
            (Some(name), _, _) => Action::Delete { name },
            (None, Some(vm), Some(hypervisor)) => {
                if let (VmArg::Port(port), Some(_)) = (&vm, self.kind) {
                    return Err(ArgError::KindWithPort(*port));
                }
                Action::Create(Box::new(CreateRequest {
                    session: SessionOptions {
                        hypervisor,
                        vm: vm.to_vm_ref(self.kind),
                        timeout: self.timeout,
                        connect_timeout: self.connect_timeout,
                        idle_timeout: self.idle_timeout,
                        view_only: self.view_only,
                        shared: self.shared,
                        run_once: self.run_once,
                        record: self.record,
                    },
                    vm,
                    name: self.name,
                    wait_timeout: self.wait_timeout,
                    open: self.open,
                    output: self.output,
                }))
            }
            _ => return Err(ArgError::Missing),
        };
        Ok(Request {
            connection,
            namespace: self.namespace,
            action,
        })
    }
}

fn parse_vm(text: &str) -> Result<VmArg, crate::vm::VmArgError> {
    text.parse()
}

fn hypervisor_name(text: &str) -> Result<String, NameError> {
    validate_name("hypervisor name", text).map(|()| text.to_string())
}

fn session_name(text: &str) -> Result<String, NameError> {
    validate_name("session name", text).map(|()| text.to_string())
}

/// A namespace is a DNS label: a subdomain without dots.
fn namespace_name(text: &str) -> Result<String, NameError> {
    validate_name("namespace", text)?;
    if text.contains('.') || text.len() > 63 {
        return Err(NameError::Invalid {
            what: "namespace",
            name: text.to_string(),
            why: "a namespace has at most 63 characters and no '.'",
        });
    }
    Ok(text.to_string())
}

/// A session duration, kept as written (the CRD takes the same grammar).
fn session_duration(text: &str) -> Result<String, ArgError> {
    duration::parse(text)?;
    if text.len() > MAX_DURATION_LEN {
        return Err(ArgError::DurationTooLong(text.to_string()));
    }
    Ok(text.to_string())
}

fn wait_duration(text: &str) -> Result<Duration, ArgError> {
    let wait = duration::parse(text)?;
    if wait.is_zero() {
        return Err(ArgError::ZeroWait);
    }
    Ok(wait)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use clap::error::ErrorKind;

    fn parse(args: &[&str]) -> Result<Request, String> {
        let cli =
            Cli::try_parse_from(std::iter::once("kubectl-console").chain(args.iter().copied()))
                .map_err(|e| e.to_string())?;
        cli.into_request().map_err(|e| e.to_string())
    }

    fn create(args: &[&str]) -> CreateRequest {
        match parse(args).unwrap().action {
            Action::Create(create) => *create,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_command_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults() {
        let request = parse(&["5910", "--hypervisor", "libvirt-demo"]).unwrap();
        assert_eq!(request.namespace, None);
        assert_eq!(request.connection, Connection::default());
        let Action::Create(create) = request.action else {
            panic!("not a create");
        };
        assert_eq!(create.vm, VmArg::Port(5910));
        assert_eq!(create.name, None);
        assert_eq!(create.wait_timeout, Duration::from_secs(120));
        assert_eq!(create.output, OutputFormat::Url);
        assert!(!create.open);
        assert_eq!(
            create.session,
            SessionOptions {
                hypervisor: "libvirt-demo".into(),
                vm: VmArg::Port(5910).to_vm_ref(None),
                ..SessionOptions::default()
            }
        );
    }

    #[test]
    fn every_flag_is_read() {
        let request = parse(&[
            "pve1/101",
            "--hypervisor=pve",
            "-n",
            "team-a",
            "--kind",
            "lxc",
            "--timeout",
            "30m",
            "--connect-timeout",
            "5m",
            "--idle-timeout",
            "10m",
            "--view-only",
            "--shared",
            "--run-once",
            "--record",
            "--name",
            "mine",
            "--wait-timeout",
            "45s",
            "--open",
            "-o",
            "yaml",
            "--kubeconfig",
            "/tmp/kc",
            "--context",
            "lab",
        ])
        .unwrap();
        assert_eq!(request.namespace.as_deref(), Some("team-a"));
        assert_eq!(
            request.connection,
            Connection {
                kubeconfig: Some("/tmp/kc".into()),
                context: Some("lab".into())
            }
        );
        let Action::Create(create) = request.action else {
            panic!("not a create");
        };
        assert_eq!(create.name.as_deref(), Some("mine"));
        assert_eq!(create.wait_timeout, Duration::from_secs(45));
        assert!(create.open);
        assert_eq!(create.output, OutputFormat::Yaml);
        let session = create.session;
        assert_eq!(session.vm.kind, Some(VmKind::Lxc));
        assert_eq!(session.vm.node.as_deref(), Some("pve1"));
        assert_eq!(session.timeout.as_deref(), Some("30m"));
        assert_eq!(session.connect_timeout.as_deref(), Some("5m"));
        assert_eq!(session.idle_timeout.as_deref(), Some("10m"));
        assert!(session.view_only && session.shared && session.run_once);
        assert!(session.record);
    }

    #[test]
    fn delete_takes_a_name_and_nothing_to_create() {
        let request = parse(&["--delete", "console-5910-abcde", "-n", "team-a"]).unwrap();
        assert_eq!(
            request.action,
            Action::Delete {
                name: "console-5910-abcde".into()
            }
        );
        let error = parse(&["--delete", "x", "5910", "--hypervisor", "h"]).unwrap_err();
        assert!(error.contains("cannot be used with"), "{error}");
    }

    #[test]
    fn usage_errors_say_what_is_wrong() {
        let cases: &[(&[&str], &str)] = &[
            (&["5910"], "--hypervisor"),
            (&["--hypervisor", "h"], "<VM>"),
            (&["web-01", "--hypervisor", "h"], "write NODE/ID"),
            (&["70000", "--hypervisor", "h"], "from 1 to 65535"),
            (&["pve1/5", "--hypervisor", "h"], "from 100 to 999999999"),
            (&["5910", "--hypervisor", "H"], "lowercase"),
            (
                &["5910", "--hypervisor", "h", "--timeout", "30 minutes"],
                "1h30m",
            ),
            (&["5910", "--hypervisor", "h", "--timeout", "1d"], "1h30m"),
            (
                &["5910", "--hypervisor", "h", "--wait-timeout", "0s"],
                "longer than 0s",
            ),
            (&["5910", "--hypervisor", "h", "--kind", "kvm"], "qemu"),
            (&["5910", "--hypervisor", "h", "--kind", "lxc"], "NODE/ID"),
            (&["5910", "--hypervisor", "h", "-o", "table"], "url"),
            (
                &["5910", "--hypervisor", "h", "--name", "Bad_Name"],
                "session name",
            ),
            (&["5910", "--hypervisor", "h", "-n", "a.b"], "namespace"),
            (&["--delete", ""], "empty"),
        ];
        for (args, expected) in cases {
            let error = parse(args).unwrap_err();
            assert!(
                error.contains(expected),
                "{args:?}: {expected:?} not in {error}"
            );
        }
    }

    #[test]
    fn a_missing_vm_is_a_clap_usage_error() {
        let error = Cli::try_parse_from(["kubectl-console", "--hypervisor", "h"]).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::MissingRequiredArgument);
        assert_eq!(error.exit_code(), 2);
    }

    #[test]
    fn help_shows_examples_as_kubectl_console() {
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("kubectl console [OPTIONS]"), "{help}");
        assert!(help.contains("kubectl console --delete"), "{help}");
        assert!(help.contains("Exit status"), "{help}");
    }

    #[test]
    fn durations_are_kept_as_written() {
        assert_eq!(
            create(&["5910", "--hypervisor", "h", "--timeout", "1h30m"])
                .session
                .timeout
                .as_deref(),
            Some("1h30m")
        );
    }
}
