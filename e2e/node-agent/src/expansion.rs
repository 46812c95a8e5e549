//! `$(VAR)` expansion, as Kubernetes applies it to `env[].value`, `command` and
//! `args` (a port of `third_party/forked/golang/expansion`).
//!
//! `$(NAME)` becomes the value of `NAME` when it is defined and stays as written
//! otherwise; `$$` is an escaped `$`; any other `$` is kept.

/// Expands every `$(NAME)` in `input` through `lookup`.
pub fn expand<'a>(input: &str, lookup: impl Fn(&str) -> Option<&'a str>) -> String {
    let mut output = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(at) = rest.find('$') {
        output.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if after.is_empty() {
            // A trailing `$` is kept as is.
            output.push('$');
            rest = after;
            break;
        }
        if let Some(escaped) = after.strip_prefix('$') {
            output.push('$');
            rest = escaped;
        } else if let Some(reference) = after.strip_prefix('(') {
            match reference.find(')') {
                Some(close) => {
                    let name = &reference[..close];
                    match lookup(name) {
                        Some(value) => output.push_str(value),
                        None => {
                            output.push_str("$(");
                            output.push_str(name);
                            output.push(')');
                        }
                    }
                    rest = &reference[close + 1..];
                }
                None => {
                    // An unterminated reference is kept literally.
                    output.push_str("$(");
                    rest = reference;
                }
            }
        } else {
            // `$` followed by anything else: keep both.
            output.push('$');
            rest = after;
        }
    }
    output.push_str(rest);
    output
}

#[cfg(test)]
mod tests {
    use super::expand;

    fn vars(name: &str) -> Option<&'static str> {
        match name {
            "VAR_A" => Some("A"),
            "VAR_B" => Some("B"),
            "VAR_EMPTY" => Some(""),
            "VAR_REF" => Some("$(VAR_A)"),
            _ => None,
        }
    }

    #[test]
    fn cases_from_the_kubernetes_test_table() {
        let cases = [
            ("$(VAR_A)", "A"),
            ("___$(VAR_B)___", "___B___"),
            ("$(VAR_A)-$(VAR_B)", "A-B"),
            ("$(VAR_A)$(VAR_B)", "AB"),
            ("$(VAR_EMPTY)", ""),
            ("$(VAR_REF)", "$(VAR_A)"),
            ("$(UNKNOWN)", "$(UNKNOWN)"),
            ("$$(VAR_A)", "$(VAR_A)"),
            ("$$$(VAR_A)", "$A"),
            ("$$$$(VAR_A)", "$$(VAR_A)"),
            ("$(VAR_A", "$(VAR_A"),
            ("$VAR_A", "$VAR_A"),
            ("${VAR_A}", "${VAR_A}"),
            ("$", "$"),
            ("foo$", "foo$"),
            ("$()", "$()"),
            ("é$(VAR_A)é", "éAé"),
            ("$é", "$é"),
            ("", ""),
        ];
        for (input, expected) in cases {
            assert_eq!(expand(input, vars), expected, "input {input:?}");
        }
    }
}
