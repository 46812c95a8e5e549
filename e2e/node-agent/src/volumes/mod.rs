//! Pod volumes, materialised as directories under the state dir and
//! bind-mounted into containers.
//!
//! Secret, ConfigMap, downward API and projected volumes are written with the
//! [`atomic_writer`] and mounted read-only, as kubelet mounts them; they are
//! rewritten whenever [`PodVolumes::sync`] runs (the pod worker calls it when
//! a watched object changes and before a token is due for refresh).
//! `hostPath` volumes, and [`claims`] bound to `hostPath` PersistentVolumes,
//! are host directories mounted as they are.
pub mod atomic_writer;
pub mod claims;
pub mod projection;
pub mod token;

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret, Volume};
use k8s_openapi::jiff::Timestamp;

use crate::downward::Addresses;
use crate::env::ObjectLookup;
use crate::podman::BindMount;
use atomic_writer::Payload;
use projection::{DEFAULT_MODE, KeyedSource, ProjectedInputs, ProjectionError, mode_bits};
use token::TokenManager;

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("volume {volume:?}: {source}")]
    Projection {
        volume: String,
        source: ProjectionError,
    },
    #[error("volume {volume:?}: {source}")]
    Io { volume: String, source: io::Error },
    #[error("volume {volume:?}: requesting a service account token: {source}")]
    Token { volume: String, source: kube::Error },
    #[error("volume {volume:?}: this volume type is not supported by the test node agent")]
    Unsupported { volume: String },
    #[error("volume {volume:?}: {why}")]
    Claim { volume: String, why: String },
    #[error("volume mount {volume:?} of container {container:?}: {why}")]
    Mount {
        container: String,
        volume: String,
        why: String,
    },
}

/// What volume contents are computed from.
pub struct VolumeInputs<'a> {
    pub pod: &'a Pod,
    pub addresses: Addresses<'a>,
    pub objects: &'a dyn ObjectLookup,
    pub tokens: &'a TokenManager,
    /// Reads PersistentVolumeClaims and their PersistentVolumes.
    pub client: &'a kube::Client,
}

/// How a materialised volume is mounted.
#[derive(Debug, Clone)]
struct Materialised {
    path: PathBuf,
    /// Kubelet mounts Secret, ConfigMap, downward API and projected volumes
    /// read-only whatever the mount says.
    always_read_only: bool,
    /// subPaths of emptyDirs are created on demand.
    creates_sub_paths: bool,
}

/// The volumes of one pod, under `<state-dir>/pods/<uid>/volumes`.
#[derive(Debug)]
pub struct PodVolumes {
    root: PathBuf,
    fs_group: Option<u32>,
    materialised: HashMap<String, Materialised>,
}

impl PodVolumes {
    pub fn new(root: PathBuf, fs_group: Option<u32>) -> Self {
        Self {
            root,
            fs_group,
            materialised: HashMap::new(),
        }
    }

    /// Creates or refreshes every volume of the pod; returns when the earliest
    /// service account token is due for refresh.
    pub async fn sync(
        &mut self,
        inputs: &VolumeInputs<'_>,
    ) -> Result<Option<Timestamp>, VolumeError> {
        let mut next_refresh: Option<Timestamp> = None;
        let volumes = inputs
            .pod
            .spec
            .iter()
            .flat_map(|s| s.volumes.iter().flatten());
        for volume in volumes {
            // A claim stays bound to its volume: resolved once.
            if volume.persistent_volume_claim.is_some()
                && self.materialised.contains_key(&volume.name)
            {
                continue;
            }
            let (materialised, refresh) = self.materialise(volume, inputs).await?;
            if let Some(refresh) = refresh {
                next_refresh = Some(next_refresh.map_or(refresh, |t| t.min(refresh)));
            }
            self.materialised.insert(volume.name.clone(), materialised);
        }
        Ok(next_refresh)
    }

    /// Bind mounts for `container`'s `volumeMounts`; call after [`Self::sync`].
    pub fn mounts(&self, container: &Container) -> Result<Vec<BindMount>, VolumeError> {
        let mut mounts = Vec::new();
        for mount in container.volume_mounts.iter().flatten() {
            let error = |why: &str| VolumeError::Mount {
                container: container.name.clone(),
                volume: mount.name.clone(),
                why: why.to_owned(),
            };
            let volume = self
                .materialised
                .get(&mount.name)
                .ok_or_else(|| error("no such volume in the pod"))?;
            if mount
                .sub_path_expr
                .as_deref()
                .is_some_and(|e| !e.is_empty())
            {
                return Err(error("subPathExpr is not supported by the test node agent"));
            }
            let mut source = volume.path.clone();
            if let Some(sub_path) = mount.sub_path.as_deref().filter(|p| !p.is_empty()) {
                let relative = Path::new(sub_path);
                if relative
                    .components()
                    .any(|c| !matches!(c, Component::Normal(_)))
                {
                    return Err(error("subPath must be a relative path inside the volume"));
                }
                source = source.join(relative);
                if volume.creates_sub_paths && !source.exists() {
                    fs::create_dir_all(&source).map_err(|e| error(&e.to_string()))?;
                    fs::set_permissions(&source, fs::Permissions::from_mode(0o777))
                        .map_err(|e| error(&e.to_string()))?;
                }
                if !source.exists() {
                    return Err(error(&format!("subPath {sub_path:?} does not exist")));
                }
            }
            mounts.push(BindMount {
                source,
                destination: mount.mount_path.clone(),
                read_only: volume.always_read_only || mount.read_only.unwrap_or(false),
            });
        }
        Ok(mounts)
    }

    async fn materialise(
        &self,
        volume: &Volume,
        inputs: &VolumeInputs<'_>,
    ) -> Result<(Materialised, Option<Timestamp>), VolumeError> {
        let name = &volume.name;
        let path = self.root.join(name);
        let io_error = |source| VolumeError::Io {
            volume: name.clone(),
            source,
        };
        let projection_error = |source| VolumeError::Projection {
            volume: name.clone(),
            source,
        };
        let namespace = inputs
            .pod
            .metadata
            .namespace
            .as_deref()
            .unwrap_or("default");
        let projected = |path: PathBuf| Materialised {
            path,
            always_read_only: true,
            creates_sub_paths: false,
        };

        if volume.empty_dir.is_some() {
            self.create_empty_dir(&path).map_err(io_error)?;
            let materialised = Materialised {
                path,
                always_read_only: false,
                creates_sub_paths: true,
            };
            return Ok((materialised, None));
        }
        let host_directory = |path: PathBuf, type_: Option<&str>, read_only: bool| {
            match type_ {
                Some("DirectoryOrCreate") => fs::create_dir_all(&path).map_err(io_error)?,
                Some("FileOrCreate") if !path.exists() => {
                    fs::write(&path, b"").map_err(io_error)?;
                }
                _ => {}
            }
            let materialised = Materialised {
                path,
                always_read_only: read_only,
                creates_sub_paths: false,
            };
            Ok((materialised, None))
        };
        if let Some(host_path) = &volume.host_path {
            let path = PathBuf::from(&host_path.path);
            return host_directory(path, host_path.type_.as_deref(), false);
        }
        if let Some(claim) = &volume.persistent_volume_claim {
            let (path, type_) = claims::host_path(inputs.client, namespace, &claim.claim_name)
                .await
                .map_err(|why| VolumeError::Claim {
                    volume: name.clone(),
                    why,
                })?;
            return host_directory(path, type_.as_deref(), claim.read_only.unwrap_or(false));
        }

        let mut payload = Payload::new();
        let mut refresh = None;
        if let Some(source) = &volume.secret {
            let secret_name = source.secret_name.as_deref().unwrap_or_default();
            let secret = inputs.objects.secret(namespace, secret_name);
            KeyedSource::secret(secret_name, secret.as_deref())
                .with(source.items.as_deref(), source.optional)
                .project(default_mode(source.default_mode), &mut payload)
                .map_err(projection_error)?;
        } else if let Some(source) = &volume.config_map {
            let map = inputs.objects.config_map(namespace, &source.name);
            KeyedSource::config_map(&source.name, map.as_deref())
                .with(source.items.as_deref(), source.optional)
                .project(default_mode(source.default_mode), &mut payload)
                .map_err(projection_error)?;
        } else if let Some(source) = &volume.downward_api {
            let items = source.items.as_deref().unwrap_or_default();
            let mode = default_mode(source.default_mode);
            projection::project_downward(items, inputs.pod, inputs.addresses, mode, &mut payload)
                .map_err(projection_error)?;
        } else if let Some(source) = &volume.projected {
            let mut tokens = BTreeMap::new();
            for projection in source.sources.iter().flatten() {
                let Some(token) = &projection.service_account_token else {
                    continue;
                };
                let issued = inputs
                    .tokens
                    .token(inputs.pod, token)
                    .await
                    .map_err(|source| VolumeError::Token {
                        volume: name.clone(),
                        source,
                    })?;
                refresh = Some(
                    refresh.map_or(issued.refresh_at, |t: Timestamp| t.min(issued.refresh_at)),
                );
                tokens.insert(token.path.clone(), issued.token);
            }
            let objects = ReferencedObjects::collect(source, namespace, inputs.objects);
            let secret = |name: &str| objects.secrets.get(name).map(Arc::as_ref);
            let config_map = |name: &str| objects.config_maps.get(name).map(Arc::as_ref);
            let projected_inputs = ProjectedInputs {
                pod: inputs.pod,
                addresses: inputs.addresses,
                secret: &secret,
                config_map: &config_map,
                tokens: &tokens,
            };
            payload = projection::projected_payload(source, &projected_inputs)
                .map_err(projection_error)?;
        } else {
            return Err(VolumeError::Unsupported {
                volume: name.clone(),
            });
        }
        atomic_writer::write(&path, &payload, self.fs_group).map_err(io_error)?;
        Ok((projected(path), refresh))
    }

    /// World-writable (kubelet creates emptyDirs 0777); with an fsGroup, owned by
    /// that group with the setgid bit so new files inherit it.
    fn create_empty_dir(&self, path: &Path) -> io::Result<()> {
        fs::create_dir_all(path)?;
        let mut mode = 0o777;
        if let Some(gid) = self.fs_group {
            std::os::unix::fs::chown(path, None, Some(gid))?;
            mode |= 0o2000;
        }
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
    }
}

/// The Secrets and ConfigMaps a projected volume reads, looked up once.
struct ReferencedObjects {
    secrets: HashMap<String, Arc<Secret>>,
    config_maps: HashMap<String, Arc<ConfigMap>>,
}

impl ReferencedObjects {
    fn collect(
        source: &k8s_openapi::api::core::v1::ProjectedVolumeSource,
        namespace: &str,
        objects: &dyn ObjectLookup,
    ) -> Self {
        let mut found = Self {
            secrets: HashMap::new(),
            config_maps: HashMap::new(),
        };
        for projection in source.sources.iter().flatten() {
            if let Some(secret) = &projection.secret
                && let Some(object) = objects.secret(namespace, &secret.name)
            {
                found.secrets.insert(secret.name.clone(), object);
            }
            if let Some(map) = &projection.config_map
                && let Some(object) = objects.config_map(namespace, &map.name)
            {
                found.config_maps.insert(map.name.clone(), object);
            }
        }
        found
    }
}

fn default_mode(mode: Option<i32>) -> u32 {
    mode.map_or(DEFAULT_MODE, mode_bits)
}
