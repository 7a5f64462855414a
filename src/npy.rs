//! A minimal writer of NumPy `.npy` files (format 1.0, little-endian float32), so Python reads
//! mnist-tch's outputs with a plain `numpy.load`.

use anyhow::{Result, ensure};
use tch::{Kind, Tensor};

/// Encodes a float tensor of any shape as `.npy` bytes (C order, `<f4`).
pub fn encode_f32(tensor: &Tensor) -> Result<Vec<u8>> {
    let shape = tensor.size();
    let values = Vec::<f32>::try_from(&tensor.to_kind(Kind::Float).to_device(tch::Device::Cpu).contiguous().view(-1))?;
    let dims: String = match shape.as_slice() {
        [one] => format!("({one},)"),
        dims => format!("({})", dims.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")),
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {dims}, }}");
    // Magic (6) + version (2) + header length (2) + header, padded with spaces and ending in a
    // newline so the data starts on a 64-byte boundary.
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    ensure!(header.len() <= u16::MAX as usize, "npy header too long");
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    for v in values {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_aligned_and_data_follows() {
        let t = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]).view([2, 3]);
        let bytes = encode_f32(&t).unwrap();
        assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00");
        let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        assert_eq!((10 + header_len) % 64, 0);
        let header = std::str::from_utf8(&bytes[10..10 + header_len]).unwrap();
        assert!(header.contains("'shape': (2, 3)"), "{header}");
        assert!(header.ends_with('\n'));
        let data = &bytes[10 + header_len..];
        assert_eq!(data.len(), 24);
        assert_eq!(f32::from_le_bytes(data[20..24].try_into().unwrap()), 6.0);
    }
}
