//! The podman wrapper against the real podman: builds a `FROM scratch` image
//! holding a static test program, runs it the way the kubelet does, and
//! removes every container and image it made. Needs root and podman (the
//! Makefile installs it); without podman these tests fail, they do not skip.
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use porthole_node_agent::kubelet::SandboxRoot;
use porthole_node_agent::podman::{
    BindMount, ContainerConfig, ExitWatch, Namespaces, Podman, Resources, RootFs, Security,
};
use porthole_node_agent::probes::{ProbeTarget, Prober};
use tokio_util::sync::CancellationToken;

/// The program in the test image: `report <code>` prints its environment and
/// arguments, writes a termination message and exits with `<code>`;
/// `serve <port>` answers HTTP requests with 200.
const TEST_PROGRAM: &str = r#"
use std::io::{Read, Write};
fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("report") => {
            println!("GREETING={}", std::env::var("GREETING").unwrap_or_default());
            println!("ARGS={}", args[2..].join(" "));
            let writable_root = std::fs::write("/probe-write", b"x").is_ok();
            println!("ROOT_WRITABLE={writable_root}");
            std::fs::write("/dev/termination-log", b"bye from report").unwrap();
            std::process::exit(args[2].parse().unwrap());
        }
        Some("serve") => {
            let listener = std::net::TcpListener::bind(("0.0.0.0", args[2].parse::<u16>().unwrap())).unwrap();
            for stream in listener.incoming() {
                let mut stream = stream.unwrap();
                let mut buffer = [0u8; 1024];
                let _ = stream.read(&mut buffer);
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
            }
        }
        other => panic!("unknown mode {other:?}"),
    }
}
"#;

/// Removes what a test created, even when it fails.
struct Cleanup {
    image: String,
    containers: Vec<String>,
    dir: PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let podman = |args: &[&str]| {
            let _ = std::process::Command::new("podman")
                .args(["--runtime", "runc", "--cgroup-manager=cgroupfs"])
                .args(args)
                .output();
        };
        // Joined containers first: podman keeps a sandbox others depend on.
        for name in self.containers.iter().rev() {
            podman(&["rm", "--force", "--time", "0", name]);
        }
        podman(&["rmi", "--force", &self.image]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{:016x}", rand::random::<u64>())
}

/// Compiles the test program statically and builds it into a scratch image.
async fn build_test_image(podman: &Podman, cleanup: &Cleanup) {
    let dir = &cleanup.dir;
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("main.rs"), TEST_PROGRAM).unwrap();
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let status = std::process::Command::new(rustc)
        .args([
            "--edition",
            "2021",
            "-O",
            "-C",
            "target-feature=+crt-static",
            "-o",
        ])
        .arg(dir.join("testprog"))
        .arg(dir.join("main.rs"))
        .status()
        .expect("rustc runs");
    assert!(status.success(), "compiling the static test program failed");
    std::fs::write(
        dir.join("Containerfile"),
        "FROM scratch\nCOPY testprog /testprog\nENTRYPOINT [\"/testprog\"]\n",
    )
    .unwrap();
    podman
        .build_image(dir, &cleanup.image)
        .await
        .unwrap_or_else(|err| panic!("podman build failed (is podman installed?): {err}"));
}

fn new_cleanup(name: &str) -> Cleanup {
    Cleanup {
        image: format!("localhost/{}:1", unique(name)),
        containers: Vec::new(),
        dir: std::env::temp_dir().join(unique(name)),
    }
}

fn labels() -> BTreeMap<String, String> {
    BTreeMap::from([("io.porthole.test".to_owned(), "podman-wrapper".to_owned())])
}

#[tokio::test]
async fn runs_a_restricted_container_to_completion() {
    let podman = Podman::new("podman");
    let mut cleanup = new_cleanup("porthole-agent-report");
    build_test_image(&podman, &cleanup).await;
    assert!(podman.image_exists(&cleanup.image).await.unwrap());
    assert!(
        !podman
            .image_exists("localhost/porthole-no-such-image:1")
            .await
            .unwrap()
    );

    let termination_log = cleanup.dir.join("termination-log");
    std::fs::write(&termination_log, b"").unwrap();
    let name = unique("porthole-agent-report");
    cleanup.containers.push(name.clone());
    let config = ContainerConfig {
        name: name.clone(),
        source: RootFs::Image(cleanup.image.clone()),
        labels: labels(),
        entrypoint: Some(vec!["/testprog".into(), "report".into()]),
        args: vec!["3".into(), "two words".into()],
        env: vec![("GREETING".into(), "hello $(NOT_EXPANDED_HERE)".into())],
        user: Some("65532:65532".into()),
        mounts: vec![BindMount {
            source: termination_log.clone(),
            destination: "/dev/termination-log".into(),
            read_only: false,
        }],
        security: Security {
            read_only_root: true,
            no_new_privileges: true,
            cap_drop: vec!["ALL".into()],
            ..Default::default()
        },
        resources: Resources {
            memory_limit_bytes: Some(64 << 20),
            cpu_limit_millis: Some(500),
            cpu_shares: Some(512),
        },
        ..Default::default()
    };
    // The container user is not root: the file must be writable by anyone.
    std::fs::set_permissions(
        &termination_log,
        std::os::unix::fs::PermissionsExt::from_mode(0o666),
    )
    .unwrap();
    let id = podman.create(&config).await.expect("create");

    let exits = ExitWatch::default();
    let cancel = CancellationToken::new();
    tokio::spawn(exits.clone().run(podman.clone(), cancel.clone()));
    let (notify, mut notices) = tokio::sync::mpsc::unbounded_channel();
    exits.watch(&id, notify);
    podman.start(&id).await.expect("start");
    let exited = async {
        loop {
            let notice = notices.recv().await.expect("exit watch alive");
            let inspect = podman.inspect(&notice).await.unwrap().unwrap();
            if inspect.has_exited() {
                return inspect;
            }
        }
    };
    let inspect = tokio::time::timeout(Duration::from_secs(30), exited)
        .await
        .expect("the died event arrives");
    cancel.cancel();

    assert_eq!(inspect.state.exit_code, 3);
    assert!(!inspect.state.oom_killed);
    assert!(inspect.state.started_at.is_some() && inspect.state.finished_at.is_some());
    assert_eq!(
        std::fs::read_to_string(&termination_log).unwrap(),
        "bye from report"
    );
    let log_path = cleanup.dir.join("container.log");
    podman.save_logs(&id, &log_path).await.expect("logs");
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.contains("GREETING=hello $(NOT_EXPANDED_HERE)"), "{log}");
    assert!(log.contains("ARGS=3 two words"), "{log}");
    assert!(log.contains("ROOT_WRITABLE=false"), "{log}");

    podman.remove(&id).await.expect("remove");
    assert!(podman.inspect(&id).await.unwrap().is_none());
    podman.remove(&id).await.expect("removing twice is fine");
}

#[tokio::test]
async fn containers_join_a_sandbox_and_serve_on_its_ip() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let podman = Podman::new("podman");
    let mut cleanup = new_cleanup("porthole-agent-serve");
    build_test_image(&podman, &cleanup).await;

    let sandbox_root = SandboxRoot::prepare(&cleanup.dir).expect("sandbox root");
    let sandbox_name = unique("porthole-agent-sandbox");
    cleanup.containers.push(sandbox_name.clone());
    let sandbox = sandbox_root.config(sandbox_name.clone(), "web-0".into(), labels());
    let sandbox_id = podman.create(&sandbox).await.expect("create sandbox");
    podman.start(&sandbox_id).await.expect("start sandbox");
    let sandbox_ip = podman
        .inspect(&sandbox_id)
        .await
        .unwrap()
        .and_then(|i| i.ip().map(str::to_owned))
        .expect("the sandbox has an address");

    let name = unique("porthole-agent-web");
    cleanup.containers.push(name.clone());
    let app = ContainerConfig {
        name,
        source: RootFs::Image(cleanup.image.clone()),
        labels: labels(),
        args: vec!["serve".into(), "8080".into()],
        namespaces: Namespaces::JoinContainer(sandbox_id.clone()),
        ..Default::default()
    };
    let app_id = podman.create(&app).await.expect("create app");
    podman.start(&app_id).await.expect("start app");

    let prober = Prober::new(podman.clone()).unwrap();
    let target = ProbeTarget {
        container_id: app_id.clone(),
        pod_ip: sandbox_ip.clone(),
        ports: serde_yaml::from_str("[{name: http, containerPort: 8080}]").unwrap(),
    };
    let probe = serde_yaml::from_str("{httpGet: {path: /healthz, port: http}}").unwrap();
    let ready = async {
        while prober.probe_once(&probe, &target).await.is_err() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), ready)
        .await
        .unwrap_or_else(|_| panic!("the app never answered on the sandbox IP {sandbox_ip}"));

    // PID 1 without a SIGTERM handler ignores it: stop escalates to SIGKILL.
    podman
        .stop(&app_id, Duration::from_secs(1))
        .await
        .expect("stop");
    let stopped = podman.inspect(&app_id).await.unwrap().unwrap();
    assert!(stopped.has_exited());
    assert_eq!(stopped.state.exit_code, 137);
    let sandbox_state = podman.inspect(&sandbox_id).await.unwrap().unwrap();
    assert!(
        sandbox_state.is_running(),
        "the sandbox outlives its containers"
    );

    podman.remove(&app_id).await.expect("remove app");
    podman.remove(&sandbox_id).await.expect("remove sandbox");
}
