//! `podman create` arguments from a typed container description (pure).
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Everything `podman create` is told about one container.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContainerConfig {
    pub name: String,
    pub source: RootFs,
    pub labels: BTreeMap<String, String>,
    /// Replaces the image's ENTRYPOINT (and with it, as in Docker, its CMD).
    pub entrypoint: Option<Vec<String>>,
    /// Replaces the image's CMD when non-empty.
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub working_dir: Option<String>,
    /// `uid`, or `uid:gid`.
    pub user: Option<String>,
    pub supplemental_groups: Vec<i64>,
    pub namespaces: Namespaces,
    pub mounts: Vec<BindMount>,
    pub security: Security,
    pub resources: Resources,
    /// Signal `podman stop` sends first; the image's (usually SIGTERM) when unset.
    pub stop_signal: Option<String>,
}

/// Where the container's root filesystem comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum RootFs {
    /// A local image (never pulled).
    Image(String),
    /// A directory on the host, used as is.
    Directory(PathBuf),
}

impl Default for RootFs {
    fn default() -> Self {
        Self::Image(String::new())
    }
}

/// Which namespaces the container gets.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Namespaces {
    /// Its own network (an address on podman's bridge), IPC and UTS namespaces.
    #[default]
    Own,
    /// Its own namespaces, with this hostname.
    OwnWithHostname(String),
    /// The network, IPC and UTS namespaces of another container (a pod sandbox).
    JoinContainer(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct BindMount {
    pub source: PathBuf,
    pub destination: String,
    pub read_only: bool,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Security {
    pub read_only_root: bool,
    pub privileged: bool,
    pub no_new_privileges: bool,
    pub seccomp_unconfined: bool,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resources {
    pub memory_limit_bytes: Option<u64>,
    pub cpu_limit_millis: Option<u64>,
    pub cpu_shares: Option<u64>,
}

/// Without these, runc cannot start containers on the test hosts
/// (RLIMIT_NOFILE above the hard limit).
const ULIMITS: [&str; 4] = [
    "--ulimit",
    "nofile=20000:20000",
    "--ulimit",
    "nproc=4096:4096",
];

impl ContainerConfig {
    /// The arguments after `podman <global flags>`.
    pub fn create_args(&self) -> Vec<String> {
        let mut args: Vec<String> = vec!["create".into(), "--name".into(), self.name.clone()];
        args.extend(ULIMITS.map(String::from));
        for (key, value) in &self.labels {
            push_pair(&mut args, "--label", format!("{key}={value}"));
        }
        self.push_namespaces(&mut args);
        for (name, value) in &self.env {
            push_pair(&mut args, "--env", format!("{name}={value}"));
        }
        if let Some(dir) = &self.working_dir {
            push_pair(&mut args, "--workdir", dir.clone());
        }
        if let Some(user) = &self.user {
            push_pair(&mut args, "--user", user.clone());
        }
        for group in &self.supplemental_groups {
            push_pair(&mut args, "--group-add", group.to_string());
        }
        for mount in &self.mounts {
            push_pair(&mut args, "--mount", mount.to_flag());
        }
        self.security.push_args(&mut args);
        self.resources.push_args(&mut args);
        if let Some(signal) = &self.stop_signal {
            push_pair(&mut args, "--stop-signal", signal.clone());
        }
        if let Some(entrypoint) = &self.entrypoint {
            // The JSON form keeps each element a separate argv entry.
            let json = serde_json::to_string(entrypoint).expect("strings serialize");
            push_pair(&mut args, "--entrypoint", json);
        }
        match &self.source {
            RootFs::Image(image) => {
                args.push("--pull=never".into());
                args.push(image.clone());
            }
            RootFs::Directory(dir) => {
                args.push("--rootfs".into());
                args.push(dir.display().to_string());
            }
        }
        args.extend(self.args.iter().cloned());
        args
    }

    fn push_namespaces(&self, args: &mut Vec<String>) {
        match &self.namespaces {
            Namespaces::Own => {}
            Namespaces::OwnWithHostname(hostname) => {
                push_pair(args, "--hostname", hostname.clone());
            }
            Namespaces::JoinContainer(id) => {
                for flag in ["--network", "--ipc", "--uts"] {
                    push_pair(args, flag, format!("container:{id}"));
                }
            }
        }
    }
}

impl BindMount {
    fn to_flag(&self) -> String {
        let mut flag = format!(
            "type=bind,source={},destination={}",
            self.source.display(),
            self.destination
        );
        if self.read_only {
            flag.push_str(",ro=true");
        }
        flag
    }
}

impl Security {
    fn push_args(&self, args: &mut Vec<String>) {
        if self.read_only_root {
            // Without `--read-only-tmpfs=false` podman mounts writable tmpfs on
            // /run, /tmp and /var/tmp, which Kubernetes does not.
            args.push("--read-only".into());
            args.push("--read-only-tmpfs=false".into());
        }
        if self.privileged {
            args.push("--privileged".into());
        }
        if self.no_new_privileges {
            push_pair(args, "--security-opt", "no-new-privileges".into());
        }
        if self.seccomp_unconfined {
            push_pair(args, "--security-opt", "seccomp=unconfined".into());
        }
        for cap in &self.cap_drop {
            push_pair(args, "--cap-drop", cap.clone());
        }
        for cap in &self.cap_add {
            push_pair(args, "--cap-add", cap.clone());
        }
    }
}

impl Resources {
    fn push_args(&self, args: &mut Vec<String>) {
        if let Some(bytes) = self.memory_limit_bytes {
            push_pair(args, "--memory", format!("{bytes}b"));
        }
        if let Some(millis) = self.cpu_limit_millis {
            push_pair(
                args,
                "--cpus",
                format!("{}.{:03}", millis / 1000, millis % 1000),
            );
        }
        if let Some(shares) = self.cpu_shares {
            push_pair(args, "--cpu-shares", shares.to_string());
        }
    }
}

fn push_pair(args: &mut Vec<String>, flag: &str, value: String) {
    args.push(flag.into());
    args.push(value);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn joined(config: &ContainerConfig) -> String {
        config.create_args().join(" ")
    }

    #[test]
    fn minimal_image_container() {
        let config = ContainerConfig {
            name: "c".into(),
            source: RootFs::Image("localhost/app:1".into()),
            ..Default::default()
        };
        assert_eq!(
            joined(&config),
            "create --name c --ulimit nofile=20000:20000 --ulimit nproc=4096:4096 \
             --pull=never localhost/app:1"
        );
    }

    #[test]
    fn entrypoint_is_json_and_args_follow_the_image() {
        let config = ContainerConfig {
            name: "c".into(),
            source: RootFs::Image("localhost/app:1".into()),
            entrypoint: Some(vec!["/bin/sh".into(), "-c".into()]),
            args: vec!["echo hi".into()],
            ..Default::default()
        };
        let args = config.create_args();
        let at = args.iter().position(|a| a == "--entrypoint").unwrap();
        assert_eq!(args[at + 1], r#"["/bin/sh","-c"]"#);
        assert_eq!(&args[args.len() - 2..], ["localhost/app:1", "echo hi"]);
    }

    #[test]
    fn joined_container_shares_sandbox_namespaces() {
        let config = ContainerConfig {
            name: "c".into(),
            namespaces: Namespaces::JoinContainer("abc".into()),
            ..Default::default()
        };
        let text = joined(&config);
        assert!(text.contains("--network container:abc --ipc container:abc --uts container:abc"));
    }

    #[test]
    fn security_resources_and_mounts() {
        let config = ContainerConfig {
            name: "c".into(),
            source: RootFs::Directory("/var/lib/x/rootfs".into()),
            user: Some("1000:2000".into()),
            mounts: vec![BindMount {
                source: "/state/vol".into(),
                destination: "/etc/config".into(),
                read_only: true,
            }],
            security: Security {
                read_only_root: true,
                no_new_privileges: true,
                cap_drop: vec!["ALL".into()],
                cap_add: vec!["NET_BIND_SERVICE".into()],
                ..Default::default()
            },
            resources: Resources {
                memory_limit_bytes: Some(64 << 20),
                cpu_limit_millis: Some(500),
                cpu_shares: Some(102),
            },
            ..Default::default()
        };
        let text = joined(&config);
        for expected in [
            "--user 1000:2000",
            "--mount type=bind,source=/state/vol,destination=/etc/config,ro=true",
            "--read-only --read-only-tmpfs=false",
            "--security-opt no-new-privileges",
            "--cap-drop ALL --cap-add NET_BIND_SERVICE",
            "--memory 67108864b --cpus 0.500 --cpu-shares 102",
        ] {
            assert!(text.contains(expected), "{expected:?} missing from {text}");
        }
        assert!(text.ends_with("--rootfs /var/lib/x/rootfs"));
        assert!(!text.contains("--pull"));
    }
}
