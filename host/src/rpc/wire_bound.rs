//! An upper bound on the memory decoding an encoded [`pb::PartitionDef`]
//! takes, read from its bytes without decoding them. Protobuf's repeated
//! fields let a few bytes on the wire become a large struct in memory (an
//! empty `NodeDef` is 2 bytes encoded and a few hundred decoded), so a task
//! bounds a registration from an unknown peer before it decodes it.

use std::mem::size_of;

use prost::encoding::decode_varint;

use super::pb;

/// What one field of a message becomes when decoded.
enum Field {
    /// A message: its struct (in a `Vec`, a map or an `Option`), plus its own fields.
    Message(&'static Schema),
    /// Repeated scalars of this many bytes each, packed or not.
    Scalars(usize),
    /// A string or bytes: its length.
    Bytes,
    /// A tensor's elements: their length, or, for a string tensor (each
    /// element at least 4 bytes on the wire), what its strings take.
    TensorData,
    /// A tensor's dtype.
    TensorDtype,
}

/// What the host holds per string element beside its bytes (a `Vec<u8>`).
const STRING_ELEMENT: usize = std::mem::size_of::<Vec<u8>>();

/// A message's struct size and the fields that allocate; others decode in place.
struct Schema {
    size: usize,
    fields: &'static [(u64, Field)],
}

const TENSOR: Schema = Schema {
    size: size_of::<pb::Tensor>(),
    fields: &[(1, Field::TensorDtype), (2, Field::Scalars(8)), (3, Field::TensorData)],
};
const INTS: Schema = Schema { size: size_of::<pb::Ints>(), fields: &[(1, Field::Scalars(8))] };
const ATTR_VALUE: Schema = Schema {
    size: size_of::<pb::AttrValue>(),
    fields: &[(4, Field::Bytes), (5, Field::Message(&INTS)), (7, Field::Message(&TENSOR))],
};
/// A map entry: key and value, and the hash table's slot.
const ATTR_ENTRY: Schema = Schema {
    size: size_of::<(String, pb::AttrValue)>() + 16,
    fields: &[(1, Field::Bytes), (2, Field::Message(&ATTR_VALUE))],
};
const TENSOR_TYPE: Schema = Schema { size: size_of::<pb::TensorType>(), fields: &[(2, Field::Scalars(8))] };
const OUTPUT_REF: Schema = Schema { size: size_of::<pb::OutputRef>(), fields: &[] };
const NODE_DEF: Schema = Schema {
    size: size_of::<pb::NodeDef>(),
    fields: &[
        (2, Field::Bytes),
        (3, Field::Bytes),
        (4, Field::Message(&OUTPUT_REF)),
        (5, Field::Scalars(4)),
        (6, Field::Message(&ATTR_ENTRY)),
        (7, Field::Bytes),
        (9, Field::Message(&TENSOR_TYPE)),
    ],
};
const PARTITION_DEF: Schema = Schema {
    size: size_of::<pb::PartitionDef>(),
    fields: &[
        (1, Field::Message(&NODE_DEF)),
        (2, Field::Message(&OUTPUT_REF)),
        (3, Field::Message(&OUTPUT_REF)),
        (4, Field::Message(&TENSOR_TYPE)),
    ],
};

/// Deeper nesting than a partition has is refused.
const MAX_DEPTH: usize = 8;

/// At most how many bytes decoding `encoded` as a `PartitionDef` holds once
/// done (its structs, and string tensors as the host holds them), or why the
/// bytes are not a `PartitionDef`. Growing vectors may take up to twice the
/// structs' part while decoding.
pub fn partition_decoded_bound(encoded: &[u8]) -> Result<usize, String> {
    bound(encoded, &PARTITION_DEF, 0)
}

fn bound(mut buf: &[u8], schema: &Schema, depth: usize) -> Result<usize, String> {
    if depth > MAX_DEPTH {
        return Err("messages nested too deeply".into());
    }
    let mut total = 0usize;
    let (mut dtype, mut data) = (0u64, 0usize);
    while !buf.is_empty() {
        let key = decode_varint(&mut buf).map_err(|e| e.to_string())?;
        let field = schema.fields.iter().find(|(tag, _)| *tag == key >> 3).map(|(_, f)| f);
        let skip = |buf: &mut &[u8], n: usize| match buf.get(n..) {
            Some(rest) => {
                *buf = rest;
                Ok(())
            }
            None => Err("a field runs past the end of the message".to_string()),
        };
        let more = match key & 7 {
            0 => {
                let value = decode_varint(&mut buf).map_err(|e| e.to_string())?;
                match field {
                    Some(Field::Scalars(width)) => *width,
                    Some(Field::TensorDtype) => {
                        dtype = value;
                        0
                    }
                    _ => 0,
                }
            }
            1 => skip(&mut buf, 8).map(|()| 0)?,
            5 => skip(&mut buf, 4).map(|()| 0)?,
            2 => {
                let len = usize::try_from(decode_varint(&mut buf).map_err(|e| e.to_string())?).unwrap_or(usize::MAX);
                let body = buf.get(..len).ok_or("a field runs past the end of the message")?;
                skip(&mut buf, len)?;
                match field {
                    Some(Field::Message(inner)) => inner.size.saturating_add(bound(body, inner, depth + 1)?),
                    // Packed: each element is at least one byte.
                    Some(Field::Scalars(width)) => len.saturating_mul(*width),
                    Some(Field::Bytes) => len,
                    Some(Field::TensorData) => {
                        data = data.saturating_add(len);
                        0
                    }
                    Some(Field::TensorDtype) | None => 0,
                }
            }
            other => return Err(format!("wire type {other} is not used by weft")),
        };
        total = total.saturating_add(more);
    }
    // The dtype may come after the data: a string tensor's elements are
    // sized once the whole message is read.
    let strings = dtype == pb::DType::DtypeString as u64;
    let elements = if strings { data.saturating_add((data / 4).saturating_mul(STRING_ELEMENT)) } else { data };
    Ok(total.saturating_add(elements))
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    #[test]
    fn empty_nodes_are_bounded_by_their_decoded_size_not_their_encoded_one() {
        let def = pb::PartitionDef { nodes: vec![pb::NodeDef::default(); 1000], ..Default::default() };
        let encoded = def.encode_to_vec();
        assert_eq!(encoded.len(), 2000, "an empty node is two bytes on the wire");
        let bound = partition_decoded_bound(&encoded).unwrap();
        assert!(bound >= 1000 * size_of::<pb::NodeDef>(), "{bound}");
        assert!(bound <= 1000 * size_of::<pb::NodeDef>() + 64, "{bound}");
    }

    #[test]
    fn payloads_and_packed_shapes_count_what_they_decode_to() {
        let tensor = pb::Tensor { dtype: 1, shape: vec![1; 1000], data: vec![0u8; 4000].into() };
        let value = pb::AttrValue { value: Some(pb::attr_value::Value::Tensor(tensor)) };
        let node = pb::NodeDef { attrs: [("value".to_string(), value)].into(), ..Default::default() };
        let encoded = pb::PartitionDef { nodes: vec![node], ..Default::default() }.encode_to_vec();
        let bound = partition_decoded_bound(&encoded).unwrap();
        assert!(bound >= 4000 + 8 * 1000, "a 1000-dimension shape decodes to 8000 bytes: {bound}");
    }

    #[test]
    fn a_string_tensor_counts_each_element_as_the_host_holds_it() {
        // 1000 empty strings: 4000 bytes of lengths on the wire.
        let tensor =
            pb::Tensor { dtype: pb::DType::DtypeString as i32, shape: vec![1000], data: vec![0u8; 4000].into() };
        let value = pb::AttrValue { value: Some(pb::attr_value::Value::Tensor(tensor)) };
        let node = pb::NodeDef { attrs: [("value".to_string(), value)].into(), ..Default::default() };
        let encoded = pb::PartitionDef { nodes: vec![node], ..Default::default() }.encode_to_vec();
        let bound = partition_decoded_bound(&encoded).unwrap();
        assert!(bound >= 4000 + 1000 * STRING_ELEMENT, "{bound}");
    }

    #[test]
    fn truncated_and_foreign_bytes_are_refused() {
        let node = pb::NodeDef { name: "n".repeat(100), ..Default::default() };
        let encoded = pb::PartitionDef { nodes: vec![node], ..Default::default() }.encode_to_vec();
        let err = partition_decoded_bound(&encoded[..encoded.len() - 1]).unwrap_err();
        assert!(err.contains("past the end"), "{err}");
        assert!(partition_decoded_bound(&[0x0b]).unwrap_err().contains("wire type 3"));
    }
}
