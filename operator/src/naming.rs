//! Deterministic names of what a session owns, so every reconcile (and every
//! operator replica) computes the same ones and server-side apply stays idempotent.
//!
//! The children live in porthole's namespace, where sessions of every tenant
//! meet: their name carries the session's uid, which no two sessions share,
//! and the session's name first, for people reading `kubectl get pods`.

/// The Pod, Service, Secret, NetworkPolicy and Ingress of a session share one
/// name: `console-<session>-<uid>`, the session name shortened to fit. It is a
/// valid DNS-1035 label (Services need one), at most 63 characters.
pub fn child_name(session: &str, uid: &str) -> String {
    const PREFIX: &str = "console-";
    const MAX: usize = 63;
    let uid: String = uid
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let room = MAX.saturating_sub(PREFIX.len() + 1 + uid.len());
    let readable: String = session
        .chars()
        .map(|c| if c == '.' { '-' } else { c })
        .take(room)
        .collect();
    let readable = readable.trim_end_matches('-');
    if readable.is_empty() {
        format!("{PREFIX}{uid}")
    } else {
        format!("{PREFIX}{readable}-{uid}")
    }
}

/// The value of the session label (`labels::SESSION`) on what a session owns:
/// its name, or for names longer than a label value may be (63 characters) a
/// prefix and a hash. Session names are DNS subdomains, so a short one is
/// already a valid label value.
pub fn label_value(session: &str) -> String {
    const MAX: usize = 63;
    if session.len() <= MAX {
        return session.to_string();
    }
    let keep = session[..MAX - 9].trim_end_matches(['-', '.']);
    format!("{keep}-{:08x}", fnv1a(session))
}

/// A stable 32-bit hash (FNV-1a): stable across releases, unlike `DefaultHasher`.
fn fnv1a(text: &str) -> u32 {
    text.bytes().fold(0x811c_9dc5_u32, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "0f1e2d3c-aaaa-bbbb-cccc-123456789abc";

    #[test]
    fn short_names_are_readable_and_carry_the_uid() {
        assert_eq!(child_name("web-01", UID), format!("console-web-01-{UID}"));
    }

    #[test]
    fn long_and_dotted_names_become_valid_dns_labels() {
        for session in [
            "a".repeat(253),
            "vm.example.com".to_string(),
            format!("{}-", "b".repeat(60)),
            "0-starts-with-a-digit".to_string(),
        ] {
            let name = child_name(&session, UID);
            assert!(name.len() <= 63, "{name} too long");
            assert!(name.starts_with("console-") && name.ends_with(UID), "{name}");
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{name}"
            );
            assert!(!name.contains("--"), "{name}");
        }
    }

    #[test]
    fn sessions_of_the_same_name_in_two_namespaces_do_not_collide() {
        let a = child_name("web", "11111111-0000-0000-0000-000000000000");
        let b = child_name("web", "22222222-0000-0000-0000-000000000000");
        assert_ne!(a, b);
    }

    #[test]
    fn label_values_are_the_name_or_a_valid_shortening() {
        assert_eq!(label_value("web-01"), "web-01");
        let long = format!("{}.{}", "a".repeat(200), "b".repeat(52));
        let value = label_value(&long);
        assert!(value.len() <= 63, "{value}");
        assert!(value.starts_with("aaaa") && value.chars().last().unwrap().is_ascii_alphanumeric());
        assert_ne!(value, label_value(&format!("{}c", &long[..252])));
    }
}
