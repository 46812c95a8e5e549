//! Image references as podman should see them.
//!
//! The test bed has no registry: every image is built or loaded locally, and
//! podman stores an image built as `porthole/proxy:dev` under
//! `localhost/porthole/proxy:dev`. A reference without a registry domain is
//! therefore qualified with `localhost/` (instead of podman's search registries),
//! and images are never pulled.

/// The registry podman files local images under.
const LOCAL_REGISTRY: &str = "localhost";

/// Qualifies `image` with `localhost/` unless its first path component names a
/// registry (contains `.` or `:`, or is `localhost`), as the Docker reference
/// grammar decides it.
pub fn normalize(image: &str) -> String {
    match image.split_once('/') {
        Some((first, _)) if is_registry_domain(first) => image.to_owned(),
        _ => format!("{LOCAL_REGISTRY}/{image}"),
    }
}

fn is_registry_domain(component: &str) -> bool {
    component == LOCAL_REGISTRY || component.contains(['.', ':'])
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn unqualified_names_become_local() {
        assert_eq!(
            normalize("porthole/proxy:dev"),
            "localhost/porthole/proxy:dev"
        );
        assert_eq!(normalize("busybox"), "localhost/busybox");
        assert_eq!(normalize("busybox:1.36"), "localhost/busybox:1.36");
        assert_eq!(
            normalize("team/app@sha256:abcd"),
            "localhost/team/app@sha256:abcd"
        );
    }

    #[test]
    fn names_with_a_registry_are_kept() {
        assert_eq!(
            normalize("localhost/porthole/proxy:dev"),
            "localhost/porthole/proxy:dev"
        );
        assert_eq!(normalize("quay.io/org/app:1"), "quay.io/org/app:1");
        assert_eq!(normalize("registry:5000/app"), "registry:5000/app");
        assert_eq!(
            normalize("docker.io/library/nginx"),
            "docker.io/library/nginx"
        );
    }
}
