//! Request parameters as pve-http-server decodes them (`decode_urlencoded`,
//! verified) and as PVE's JSON schema checks them (messages from
//! `PVE::JSONSchema`, from memory: not verified against its source).

use std::collections::BTreeMap;

/// Decoded parameters; `None` is a key without value (`a` or `a=`).
pub type Params = BTreeMap<String, Option<String>>;

/// Perl's `decode_urlencoded`: split on `&` and `;`, then on `=` keeping only the
/// first two fields (so `a=b=c` gives `b`), `+` becomes a space, `%XX` is
/// decoded; a repeated key joins values with NUL.
pub fn decode_urlencoded(data: &str, into: &mut Params) {
    for pair in data.split(['&', ';']) {
        if pair.is_empty() {
            continue;
        }
        let mut fields = pair.split('=');
        let key = unescape(fields.next().unwrap_or(""));
        let value = fields.next().filter(|v| !v.is_empty()).map(unescape);
        let value = match (value, into.get(&key)) {
            (Some(v), Some(Some(old))) => Some(format!("{old}\0{v}")),
            (v, _) => v,
        };
        into.insert(key, value);
    }
}

fn unescape(s: &str) -> String {
    crate::auth::uri_unescape(&s.replace('+', " "))
}

/// Parameters from a JSON body: scalars become strings as Perl would see them.
pub fn from_json(value: &serde_json::Value, into: &mut Params) -> bool {
    let Some(object) = value.as_object() else {
        return false;
    };
    for (key, value) in object {
        let text = match value {
            serde_json::Value::Null => None,
            serde_json::Value::Bool(b) => Some(if *b { "1" } else { "0" }.to_string()),
            serde_json::Value::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        };
        into.insert(key.clone(), text);
    }
    true
}

/// A parameter's type in the method's schema.
#[derive(Debug, Clone, Copy)]
pub enum Type {
    Bool,
    Int { min: i64, max: i64 },
    Str { max_len: usize },
}

/// One parameter of a method's schema.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    pub name: &'static str,
    pub kind: Type,
    pub optional: bool,
}

pub const fn required(name: &'static str, kind: Type) -> Spec {
    Spec {
        name,
        kind,
        optional: false,
    }
}

pub const fn optional(name: &'static str, kind: Type) -> Spec {
    Spec {
        name,
        kind,
        optional: true,
    }
}

/// Checked parameters.
#[derive(Debug, Default)]
pub struct Checked(BTreeMap<String, String>);

impl Checked {
    pub fn str(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    pub fn bool(&self, name: &str) -> bool {
        self.0.get(name).is_some_and(|v| v == "1")
    }

    pub fn int(&self, name: &str) -> Option<i64> {
        self.0.get(name).and_then(|v| v.parse().ok())
    }
}

/// Checks `params` against `specs` (`additionalProperties => 0`); the error map
/// is what `raise_param_exc` returns under `errors`.
pub fn check(params: &Params, specs: &[Spec]) -> Result<Checked, BTreeMap<String, String>> {
    let mut errors = BTreeMap::new();
    let mut checked = BTreeMap::new();
    for name in params.keys() {
        if !specs.iter().any(|s| s.name == name) {
            errors.insert(
                name.clone(),
                "property is not defined in schema and the schema does not allow additional properties"
                    .to_string(),
            );
        }
    }
    for spec in specs {
        let Some(Some(value)) = params.get(spec.name) else {
            if !spec.optional {
                errors.insert(
                    spec.name.to_string(),
                    "property is missing and it is not optional".to_string(),
                );
            }
            continue;
        };
        match check_value(spec.kind, value) {
            Ok(normal) => {
                checked.insert(spec.name.to_string(), normal);
            }
            Err(message) => {
                errors.insert(spec.name.to_string(), message);
            }
        }
    }
    if errors.is_empty() {
        Ok(Checked(checked))
    } else {
        Err(errors)
    }
}

fn check_value(kind: Type, value: &str) -> Result<String, String> {
    match kind {
        Type::Bool => {
            let lower = value.to_ascii_lowercase();
            match lower.as_str() {
                "1" | "true" | "yes" | "on" => Ok("1".into()),
                "0" | "false" | "no" | "off" => Ok("0".into()),
                _ => Err(format!("type check ('boolean') failed - got '{value}'")),
            }
        }
        Type::Int { min, max } => {
            let digits = value.strip_prefix('-').unwrap_or(value);
            let parsed = (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
                .then(|| value.parse::<i64>().ok())
                .flatten()
                .ok_or_else(|| format!("type check ('integer') failed - got '{value}'"))?;
            if parsed < min {
                return Err(format!("value must have a minimum value of {min}"));
            }
            if parsed > max {
                return Err(format!("value must have a maximum value of {max}"));
            }
            Ok(value.to_string())
        }
        Type::Str { max_len } => {
            if value.chars().count() > max_len {
                return Err(format!("value may only be {max_len} characters long"));
            }
            Ok(value.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_like_pve_http_server() {
        let mut params = Params::new();
        decode_urlencoded(
            "port=5900;vncticket=a+b%2Bc%3D&x=y=z&flag&empty=",
            &mut params,
        );
        assert_eq!(params["port"].as_deref(), Some("5900"));
        assert_eq!(params["vncticket"].as_deref(), Some("a b+c="));
        assert_eq!(params["x"].as_deref(), Some("y"));
        assert_eq!(params["flag"], None);
        assert_eq!(params["empty"], None);
    }

    #[test]
    fn checks_types_ranges_and_unknown_parameters() {
        let specs = [
            required(
                "port",
                Type::Int {
                    min: 5900,
                    max: 5999,
                },
            ),
            required("vncticket", Type::Str { max_len: 3 }),
            optional("websocket", Type::Bool),
        ];
        let mut params = Params::new();
        decode_urlencoded(
            "port=6000&vncticket=abcd&websocket=maybe&what=1",
            &mut params,
        );
        let errors = check(&params, &specs).unwrap_err();
        assert_eq!(errors["port"], "value must have a maximum value of 5999");
        assert_eq!(errors["vncticket"], "value may only be 3 characters long");
        assert_eq!(
            errors["websocket"],
            "type check ('boolean') failed - got 'maybe'"
        );
        assert!(errors["what"].starts_with("property is not defined"));
        let mut params = Params::new();
        decode_urlencoded("port=5901&vncticket=abc&websocket=on", &mut params);
        let checked = check(&params, &specs).unwrap();
        assert!(checked.bool("websocket"));
        assert_eq!(checked.int("port"), Some(5901));
    }
}
