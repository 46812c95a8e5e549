//! Extra IPv4 addresses on the host's `lo`: ClusterIPs and the node IP.
//!
//! The test hosts have no `dummy` link type; an address on `lo` is reachable
//! from the host and from containers (packets to it are delivered locally).
//! ClusterIPs are added with the label `lo:porthole`, so a restarted agent can
//! find and remove the ones it no longer serves.
use std::net::Ipv4Addr;

use tokio::process::Command;

const DEVICE: &str = "lo";
const LABEL: &str = "lo:porthole";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot run ip: {0}")]
    Spawn(#[from] std::io::Error),
    #[error("ip {args} failed: {stderr}")]
    Failed { args: String, stderr: String },
}

/// Adds `address/32` to `lo`; an address already there is fine. `labelled`
/// marks it as one of the agent's ClusterIPs.
pub async fn add(address: Ipv4Addr, labelled: bool) -> Result<(), Error> {
    let cidr = format!("{address}/32");
    let mut args = vec!["addr", "add", &cidr, "dev", DEVICE];
    if labelled {
        args.extend(["label", LABEL]);
    }
    match ip(&args).await {
        // Older kernels say "File exists", newer ones "Address already assigned".
        Err(Error::Failed { stderr, .. })
            if stderr.contains("File exists") || stderr.contains("already assigned") =>
        {
            Ok(())
        }
        result => result.map(drop),
    }
}

/// Removes `address/32` from `lo`; an address already gone is fine.
pub async fn remove(address: Ipv4Addr) -> Result<(), Error> {
    let cidr = format!("{address}/32");
    match ip(&["addr", "del", &cidr, "dev", DEVICE]).await {
        Err(Error::Failed { stderr, .. }) if stderr.contains("Cannot assign requested address") => {
            Ok(())
        }
        result => result.map(drop),
    }
}

/// The ClusterIPs a previous run of the agent left on `lo`.
pub async fn labelled_addresses() -> Result<Vec<Ipv4Addr>, Error> {
    let output = ip(&["-o", "-4", "addr", "show", "dev", DEVICE, "label", LABEL]).await?;
    Ok(parse_addresses(&output))
}

/// Addresses from `ip -o -4 addr show` lines (`1: lo    inet 10.96.0.1/32 scope ...`).
fn parse_addresses(output: &str) -> Vec<Ipv4Addr> {
    output
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            words.find(|w| *w == "inet")?;
            words.next()?.split('/').next()?.parse().ok()
        })
        .collect()
}

/// Runs `ip ARGS`; its output.
pub(crate) async fn ip(args: &[&str]) -> Result<String, Error> {
    let output = Command::new("ip").args(args).output().await?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(Error::Failed {
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ip_output() {
        let output = "1: lo    inet 10.96.0.1/32 scope global lo:porthole\\       valid_lft forever preferred_lft forever\n\
                      1: lo    inet 10.96.0.10/32 scope global lo:porthole\\       valid_lft forever preferred_lft forever\n";
        assert_eq!(
            parse_addresses(output),
            [Ipv4Addr::new(10, 96, 0, 1), Ipv4Addr::new(10, 96, 0, 10)]
        );
    }
}
