//! Deterministic names of what a session owns, so every reconcile (and every
//! operator replica) computes the same ones and server-side apply stays idempotent.

/// The Pod, Service and Secret of a session share one name: `console-<session>`,
/// shortened with a hash when the session name is long. It is a valid DNS-1035
/// label (Services need one), at most 63 characters.
pub fn child_name(session: &str) -> String {
    const PREFIX: &str = "console-";
    const MAX: usize = 63;
    let candidate = format!("{PREFIX}{session}");
    if candidate.len() <= MAX && !candidate.contains('.') {
        return candidate;
    }
    let hash = fnv1a(session);
    let keep: String = session
        .chars()
        .map(|c| if c == '.' { '-' } else { c })
        .take(MAX - PREFIX.len() - 9)
        .collect();
    format!("{PREFIX}{}-{hash:08x}", keep.trim_end_matches('-'))
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

    #[test]
    fn short_names_are_readable() {
        assert_eq!(child_name("web-01"), "console-web-01");
    }

    #[test]
    fn long_and_dotted_names_become_valid_dns_labels() {
        for session in [
            "a".repeat(253),
            "vm.example.com".to_string(),
            format!("{}-", "b".repeat(60)),
        ] {
            let name = child_name(&session);
            assert!(name.len() <= 63, "{name} too long");
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{name}"
            );
            assert!(!name.ends_with('-'));
        }
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

    #[test]
    fn different_long_names_do_not_collide() {
        let a = child_name(&format!("{}a", "x".repeat(100)));
        let b = child_name(&format!("{}b", "x".repeat(100)));
        assert_ne!(a, b);
    }
}
