//! Resource quantities (`500m`, `64Mi`, `1G`, `1.5`) as numbers.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid resource quantity {0:?}")]
pub struct InvalidQuantity(pub String);

/// The quantity in thousandths of a unit (CPU millicores), rounded up.
pub fn millis(quantity: &str) -> Result<u64, InvalidQuantity> {
    scaled(quantity, 1000.0)
}

/// The quantity in units (memory bytes), rounded up.
pub fn units(quantity: &str) -> Result<u64, InvalidQuantity> {
    scaled(quantity, 1.0)
}

fn scaled(quantity: &str, scale: f64) -> Result<u64, InvalidQuantity> {
    let invalid = || InvalidQuantity(quantity.to_owned());
    let text = quantity.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let number: f64 = number.parse().map_err(|_| invalid())?;
    let multiplier = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        exponent => match exponent.strip_prefix(['e', 'E']) {
            Some(power) => 10f64.powi(power.parse().map_err(|_| invalid())?),
            None => return Err(invalid()),
        },
    };
    let value = (number * multiplier * scale).ceil();
    if value.is_finite() && value >= 0.0 {
        // Saturating: quantities beyond u64 are not limits anyone means.
        Ok(value as u64)
    } else {
        Err(invalid())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_in_millicores() {
        assert_eq!(millis("500m"), Ok(500));
        assert_eq!(millis("2"), Ok(2000));
        assert_eq!(millis("0.25"), Ok(250));
        assert_eq!(millis("1.5"), Ok(1500));
    }

    #[test]
    fn memory_in_bytes() {
        assert_eq!(units("64Mi"), Ok(64 << 20));
        assert_eq!(units("1G"), Ok(1_000_000_000));
        assert_eq!(units("128974848"), Ok(128_974_848));
        assert_eq!(units("129e6"), Ok(129_000_000));
        assert_eq!(units("1k"), Ok(1000));
    }

    #[test]
    fn rejects_nonsense() {
        assert!(units("lots").is_err());
        assert!(units("12Q").is_err());
        assert!(units("-1").is_err());
    }
}
