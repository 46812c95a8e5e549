//! Deterministic names of what a session owns, so every reconcile (and every
//! operator replica) computes the same ones and server-side apply stays idempotent.
//!
//! The children's name ([`child_name`]) is part of the contract: tests and
//! tools find a session's children by it.

pub use porthole_api::contract::child_name;

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
            assert!(
                name.starts_with("console-") && name.ends_with(UID),
                "{name}"
            );
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
