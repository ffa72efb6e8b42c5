//! Serializers turn a record's key and value into bytes, as the Java client's `Serializer` does.

use bytes::Bytes;

use crate::producer::error::ProducerError;

/// Turns a `T` into the bytes of a record's key or value.
pub trait Serializer<T>: Send + Sync {
    /// The bytes of `data`, a key or value of a record for `topic`.
    fn serialize(&self, topic: &str, data: &T) -> Result<Bytes, String>;
}

/// Bytes as they are: `Bytes` (no copy), `Vec<u8>` and `&'static [u8]`.
#[derive(Debug, Clone, Copy, Default)]
pub struct BytesSerializer;

impl Serializer<Bytes> for BytesSerializer {
    fn serialize(&self, _topic: &str, data: &Bytes) -> Result<Bytes, String> {
        Ok(data.clone())
    }
}

impl Serializer<Vec<u8>> for BytesSerializer {
    fn serialize(&self, _topic: &str, data: &Vec<u8>) -> Result<Bytes, String> {
        Ok(Bytes::copy_from_slice(data))
    }
}

impl Serializer<&'static [u8]> for BytesSerializer {
    fn serialize(&self, _topic: &str, data: &&'static [u8]) -> Result<Bytes, String> {
        Ok(Bytes::from_static(data))
    }
}

/// UTF-8 text: `String` and `&'static str`.
#[derive(Debug, Clone, Copy, Default)]
pub struct StringSerializer;

impl Serializer<String> for StringSerializer {
    fn serialize(&self, _topic: &str, data: &String) -> Result<Bytes, String> {
        Ok(Bytes::copy_from_slice(data.as_bytes()))
    }
}

impl Serializer<&'static str> for StringSerializer {
    fn serialize(&self, _topic: &str, data: &&'static str) -> Result<Bytes, String> {
        Ok(Bytes::from_static(data.as_bytes()))
    }
}

/// Any `serde::Serialize` value as compact JSON.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonSerializer;

impl<T: serde::Serialize> Serializer<T> for JsonSerializer {
    fn serialize(&self, _topic: &str, data: &T) -> Result<Bytes, String> {
        serde_json::to_vec(data)
            .map(Bytes::from)
            .map_err(|e| e.to_string())
    }
}

/// Serializes an optional key or value, naming the part in the error.
pub(crate) fn serialize_part<T>(
    ser: &dyn Serializer<T>,
    topic: &str,
    data: Option<&T>,
    part: &'static str,
) -> Result<Option<Bytes>, ProducerError> {
    data.map(|d| ser.serialize(topic, d))
        .transpose()
        .map_err(|reason| ProducerError::Serialize { part, reason })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize)]
    struct Point {
        x: i32,
        label: &'static str,
    }

    #[test]
    fn serializers_write_the_expected_bytes() {
        let b = Serializer::<String>::serialize(&StringSerializer, "t", &"héllo".to_string());
        assert_eq!(b.as_deref().ok(), Some("héllo".as_bytes()));
        let b = BytesSerializer.serialize("t", &vec![0u8, 255]);
        assert_eq!(b.as_deref().ok(), Some(&[0u8, 255][..]));
        let j = JsonSerializer.serialize("t", &Point { x: 3, label: "a" });
        assert_eq!(j.as_deref().ok(), Some(&br#"{"x":3,"label":"a"}"#[..]));
        let bad = JsonSerializer.serialize("t", &f64::NAN);
        assert_eq!(bad.ok(), Some(Bytes::from_static(b"null")));
        let e = serialize_part::<std::collections::HashMap<Vec<u8>, i32>>(
            &JsonSerializer,
            "t",
            Some(&[(vec![1u8], 1)].into_iter().collect()),
            "key",
        );
        assert!(
            matches!(&e, Err(ProducerError::Serialize { part: "key", .. })),
            "{e:?}"
        );
    }
}
