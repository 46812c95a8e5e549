//! `persistentVolumeClaim` volumes: the claim's bound PersistentVolume, which
//! on this single-node test bed must be a `hostPath` one, bind-mounted as is.
//!
//! As kubelet does for `hostPath` PersistentVolumes, the directory's ownership
//! is left alone (no `fsGroup` change): whoever creates the volume makes it
//! writable for the pods that use it.

use std::path::PathBuf;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::{Api, Client};

/// The host directory behind `namespace/claim_name`, with the `hostPath` type
/// it asks for (`DirectoryOrCreate` and so on).
pub async fn host_path(
    client: &Client,
    namespace: &str,
    claim_name: &str,
) -> Result<(PathBuf, Option<String>), String> {
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
    let claim = claims
        .get_opt(claim_name)
        .await
        .map_err(|e| format!("reading PersistentVolumeClaim {namespace}/{claim_name}: {e}"))?
        .ok_or_else(|| format!("persistentvolumeclaim {claim_name:?} not found"))?;
    let volume_name = bound_volume(&claim)?;
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    let volume = volumes
        .get_opt(volume_name)
        .await
        .map_err(|e| format!("reading PersistentVolume {volume_name}: {e}"))?;
    resolve(&claim, volume.as_ref())
}

/// The volume a claim is bound to; an unbound claim cannot be mounted yet.
fn bound_volume(claim: &PersistentVolumeClaim) -> Result<&str, String> {
    let name = claim.metadata.name.as_deref().unwrap_or_default();
    let phase = claim.status.as_ref().and_then(|s| s.phase.as_deref());
    match claim.spec.as_ref().and_then(|s| s.volume_name.as_deref()) {
        Some(volume) if !volume.is_empty() && phase == Some("Bound") => Ok(volume),
        _ => Err(format!(
            "PersistentVolumeClaim {name:?} is not bound (phase {})",
            phase.unwrap_or("unknown")
        )),
    }
}

/// Checks that `volume` is the one bound to `claim` and serves it from the host.
fn resolve(
    claim: &PersistentVolumeClaim,
    volume: Option<&PersistentVolume>,
) -> Result<(PathBuf, Option<String>), String> {
    let volume_name = bound_volume(claim)?;
    let volume =
        volume.ok_or_else(|| format!("PersistentVolume {volume_name:?} does not exist"))?;
    let spec = volume.spec.as_ref();
    let claim_ref = spec.and_then(|s| s.claim_ref.as_ref());
    let bound_here = claim_ref.is_some_and(|r| {
        r.uid.is_some() && r.uid == claim.metadata.uid
            || r.uid.is_none()
                && r.name == claim.metadata.name
                && r.namespace == claim.metadata.namespace
    });
    if !bound_here {
        return Err(format!(
            "PersistentVolume {volume_name:?} is not bound to this claim"
        ));
    }
    let host_path = spec.and_then(|s| s.host_path.as_ref()).ok_or_else(|| {
        format!(
            "PersistentVolume {volume_name:?} is not a hostPath volume, the only kind the test node agent mounts"
        )
    })?;
    Ok((PathBuf::from(&host_path.path), host_path.type_.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(bound: bool) -> PersistentVolumeClaim {
        serde_yaml::from_str(&format!(
            r#"
metadata: {{name: recordings, namespace: team-a, uid: c-1}}
spec: {{volumeName: rec-pv, accessModes: [ReadWriteOnce]}}
status: {{phase: {}}}
"#,
            if bound { "Bound" } else { "Pending" }
        ))
        .unwrap()
    }

    fn volume(claim_uid: &str, host_path: bool) -> PersistentVolume {
        let source = if host_path {
            "hostPath: {path: /srv/recordings, type: DirectoryOrCreate}"
        } else {
            "nfs: {server: nfs.example, path: /export}"
        };
        serde_yaml::from_str(&format!(
            r#"
metadata: {{name: rec-pv}}
spec:
  capacity: {{storage: 1Gi}}
  accessModes: [ReadWriteOnce]
  claimRef: {{namespace: team-a, name: recordings, uid: {claim_uid}}}
  {source}
"#
        ))
        .unwrap()
    }

    #[test]
    fn a_bound_hostpath_claim_is_its_directory() {
        assert_eq!(
            resolve(&claim(true), Some(&volume("c-1", true))),
            Ok((
                PathBuf::from("/srv/recordings"),
                Some("DirectoryOrCreate".into())
            ))
        );
    }

    #[test]
    fn an_unbound_claim_waits() {
        let error = resolve(&claim(false), Some(&volume("c-1", true))).unwrap_err();
        assert!(error.contains("not bound"), "{error}");
    }

    #[test]
    fn a_volume_bound_elsewhere_or_not_on_the_host_is_refused() {
        let error = resolve(&claim(true), Some(&volume("c-2", true))).unwrap_err();
        assert!(error.contains("not bound to this claim"), "{error}");
        let error = resolve(&claim(true), Some(&volume("c-1", false))).unwrap_err();
        assert!(error.contains("not a hostPath"), "{error}");
        let error = resolve(&claim(true), None).unwrap_err();
        assert!(error.contains("does not exist"), "{error}");
    }
}
