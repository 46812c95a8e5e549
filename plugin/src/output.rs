//! What goes to stdout once the session is ready.

use porthole_api::v1alpha1::ConsoleSession;

/// `--output`'s formats.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Only the console URL, one line: `$(kubectl console ...)` is the URL.
    #[default]
    Url,
    /// The ready ConsoleSession as YAML.
    Yaml,
    /// The ready ConsoleSession as JSON.
    Json,
}

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("writing the session as JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("writing the session as YAML: {0}")]
    Yaml(#[from] serde_yaml::Error),
}

/// The text to print for a ready session whose console is at `url`, ending in a
/// newline.
pub fn render(
    format: OutputFormat,
    session: &ConsoleSession,
    url: &str,
) -> Result<String, OutputError> {
    Ok(match format {
        OutputFormat::Url => format!("{url}\n"),
        OutputFormat::Json => {
            serde_json::to_string_pretty(&without_managed_fields(session))? + "\n"
        }
        OutputFormat::Yaml => serde_yaml::to_string(&without_managed_fields(session))?,
    })
}

/// The session as `kubectl get -o yaml` shows it: without managed fields.
fn without_managed_fields(session: &ConsoleSession) -> ConsoleSession {
    let mut session = session.clone();
    session.metadata.managed_fields = None;
    session
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
    use porthole_api::v1alpha1::ConsoleSessionStatus;

    const URL: &str = "http://console-s.team-a/#token=abc";

    fn session() -> ConsoleSession {
        let mut session: ConsoleSession = serde_json::from_value(serde_json::json!({
            "apiVersion": "porthole.dev/v1alpha1",
            "kind": "ConsoleSession",
            "metadata": {"name": "s"},
            "spec": {"hypervisor": "h", "vm": {"port": 5910}, "timeout": "30m"}
        }))
        .unwrap();
        session.metadata.managed_fields = Some(vec![ManagedFieldsEntry::default()]);
        session.status = Some(ConsoleSessionStatus {
            url: Some(URL.into()),
            ..ConsoleSessionStatus::default()
        });
        session
    }

    #[test]
    fn the_default_is_the_url_alone() {
        assert_eq!(
            render(OutputFormat::Url, &session(), URL).unwrap(),
            format!("{URL}\n")
        );
    }

    #[test]
    fn json_and_yaml_are_the_session_without_managed_fields() {
        let json = render(OutputFormat::Json, &session(), URL).unwrap();
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["status"]["url"], URL);
        assert_eq!(value["spec"]["timeout"], "30m");
        assert!(value["metadata"].get("managedFields").is_none());

        let yaml = render(OutputFormat::Yaml, &session(), URL).unwrap();
        let value: serde_json::Value = serde_yaml::from_str(&yaml).unwrap();
        assert_eq!(value["kind"], "ConsoleSession");
        assert_eq!(value["status"]["url"], URL);
        assert!(value["metadata"].get("managedFields").is_none());
    }
}
