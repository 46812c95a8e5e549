//! A minimal PPM (P6) to PNG converter for QEMU versions whose `screendump` cannot
//! write PNG itself: 8-bit RGB, zlib "stored" (uncompressed) blocks.

/// Errors reading a PPM file.
#[derive(Debug, thiserror::Error)]
pub enum PngError {
    #[error("not a binary PPM (P6) with maxval 255")]
    NotPpm,
    #[error("PPM pixel data is truncated")]
    Truncated,
}

/// Converts a binary PPM to PNG.
pub fn from_ppm(ppm: &[u8]) -> Result<Vec<u8>, PngError> {
    let (width, height, pixels) = parse_ppm(ppm)?;
    Ok(encode_rgb(width, height, pixels))
}

fn parse_ppm(ppm: &[u8]) -> Result<(u32, u32, &[u8]), PngError> {
    let mut fields = Vec::with_capacity(4);
    let mut pos = 0;
    while fields.len() < 4 {
        while pos < ppm.len() && (ppm[pos].is_ascii_whitespace() || ppm[pos] == b'#') {
            if ppm[pos] == b'#' {
                while pos < ppm.len() && ppm[pos] != b'\n' {
                    pos += 1;
                }
            }
            pos += 1;
        }
        let start = pos;
        while pos < ppm.len() && !ppm[pos].is_ascii_whitespace() {
            pos += 1;
        }
        if start == pos {
            return Err(PngError::NotPpm);
        }
        fields.push(std::str::from_utf8(&ppm[start..pos]).map_err(|_| PngError::NotPpm)?);
    }
    pos += 1; // the single whitespace after maxval
    let number = |s: &str| s.parse::<u32>().map_err(|_| PngError::NotPpm);
    if fields[0] != "P6" || number(fields[3])? != 255 {
        return Err(PngError::NotPpm);
    }
    let (width, height) = (number(fields[1])?, number(fields[2])?);
    let len = width as usize * height as usize * 3;
    let pixels = ppm.get(pos..pos + len).ok_or(PngError::Truncated)?;
    Ok((width, height, pixels))
}

/// PNG of 8-bit RGB pixels, row by row.
pub fn encode_rgb(width: u32, height: u32, pixels: &[u8]) -> Vec<u8> {
    let row = width as usize * 3;
    let mut raw = Vec::with_capacity((row + 1) * height as usize);
    for line in pixels.chunks(row.max(1)).take(height as usize) {
        raw.push(0); // filter type None
        raw.extend_from_slice(line);
    }
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::with_capacity(13);
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    chunk(&mut png, b"IHDR", &ihdr);
    chunk(&mut png, b"IDAT", &zlib_stored(&raw));
    chunk(&mut png, b"IEND", &[]);
    png
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let start = out.len();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let crc = crc32(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

fn zlib_stored(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = if data.is_empty() {
        vec![&[]]
    } else {
        data.chunks(65_535).collect()
    };
    for (i, block) in blocks.iter().enumerate() {
        out.push(u8::from(i + 1 == blocks.len()));
        let len = block.len() as u16;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(block);
    }
    out.extend_from_slice(&adler32(data).to_be_bytes());
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in data {
        a = (a + u32::from(byte)) % 65_521;
        b = (b + a) % 65_521;
    }
    (b << 16) | a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_match_known_values() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(adler32(b"Wikipedia"), 0x11E6_0398);
    }

    #[test]
    fn converts_a_tiny_ppm() {
        let ppm = b"P6\n# comment\n2 1\n255\n\xff\x00\x00\x00\xff\x00";
        let png = from_ppm(ppm).unwrap();
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));
        assert_eq!(&png[12..16], b"IHDR");
        assert_eq!(&png[16..24], &[0, 0, 0, 2, 0, 0, 0, 1]);
        assert!(png.ends_with(&[0xAE, 0x42, 0x60, 0x82]));
    }

    #[test]
    fn rejects_other_formats() {
        assert!(from_ppm(b"P3\n1 1\n255\n0 0 0").is_err());
        assert!(from_ppm(b"P6\n2 2\n255\n\x00").is_err());
    }
}
