//! The parts of podman's JSON output the agent reads.
use std::collections::BTreeMap;

use k8s_openapi::jiff::Timestamp;
use serde::{Deserialize, Deserializer};

/// `podman container inspect`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerInspect {
    pub id: String,
    /// The image ID.
    #[serde(default)]
    pub image: String,
    pub state: ContainerState,
    #[serde(default)]
    pub config: InspectConfig,
    #[serde(default)]
    pub network_settings: NetworkSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerState {
    /// `created`, `running`, `exited`, ...
    pub status: String,
    pub running: bool,
    pub exit_code: i32,
    #[serde(rename = "OOMKilled", default)]
    pub oom_killed: bool,
    #[serde(deserialize_with = "optional_time")]
    pub started_at: Option<Timestamp>,
    #[serde(deserialize_with = "optional_time")]
    pub finished_at: Option<Timestamp>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct InspectConfig {
    #[serde(default, deserialize_with = "null_as_default")]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct NetworkSettings {
    #[serde(rename = "IPAddress", default)]
    pub ip_address: String,
}

impl ContainerInspect {
    /// Started and not yet exited.
    pub fn is_running(&self) -> bool {
        self.state.running
    }

    /// Ran and exited (as opposed to created but never started).
    pub fn has_exited(&self) -> bool {
        !self.state.running && self.state.started_at.is_some()
    }

    pub fn ip(&self) -> Option<&str> {
        Some(self.network_settings.ip_address.as_str()).filter(|ip| !ip.is_empty())
    }
}

/// One row of `podman ps --format json`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerSummary {
    pub id: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub labels: BTreeMap<String, String>,
}

/// `podman image inspect`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImageInspect {
    #[serde(default)]
    pub config: ImageConfig,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImageConfig {
    #[serde(default)]
    pub user: String,
}

/// podman reports "never" as Go's zero time, year 1.
fn optional_time<'de, D: Deserializer<'de>>(de: D) -> Result<Option<Timestamp>, D::Error> {
    let text = Option::<String>::deserialize(de)?.unwrap_or_default();
    if text.is_empty() || text.starts_with("0001-") {
        return Ok(None);
    }
    text.parse().map(Some).map_err(serde::de::Error::custom)
}

fn null_as_default<'de, D, T>(de: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(de)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_an_exited_container() {
        let json = r#"[{"Id":"abc","Image":"52ee","State":{"Status":"exited","Running":false,
            "OOMKilled":false,"ExitCode":7,"StartedAt":"2026-11-21T05:51:54.275434115Z",
            "FinishedAt":"2026-11-21T05:51:54.276390712Z"},"Config":{"Labels":null},
            "NetworkSettings":{"IPAddress":""}}]"#;
        let [inspect]: [ContainerInspect; 1] = serde_json::from_str(json).unwrap();
        assert!(inspect.has_exited());
        assert_eq!(inspect.state.exit_code, 7);
        assert!(inspect.state.finished_at.is_some());
        assert!(inspect.config.labels.is_empty());
        assert_eq!(inspect.ip(), None);
    }

    #[test]
    fn zero_time_means_never() {
        let json = r#"{"Id":"abc","State":{"Status":"created","Running":false,"ExitCode":0,
            "StartedAt":"0001-01-01T00:00:00Z","FinishedAt":"0001-01-01T00:00:00Z"}}"#;
        let inspect: ContainerInspect = serde_json::from_str(json).unwrap();
        assert_eq!(inspect.state.started_at, None);
        assert!(!inspect.has_exited());
    }
}
