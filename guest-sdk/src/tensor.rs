//! Tensors: element types, shapes and little-endian element bytes, with
//! conversions from Rust scalars, slices and `Vec`s and back.

use std::fmt;

use crate::error::{Code, Error, Result};
use crate::wit::types as raw;

/// Element type of a tensor.
pub use crate::wit::types::Dtype as DType;

/// A Rust type that can be a tensor element.
pub trait Element: Copy + fmt::Debug + 'static {
    /// Its dtype.
    const DTYPE: DType;
    /// Bytes per element.
    const SIZE: usize;
    /// Appends its little-endian bytes.
    fn put(self, out: &mut Vec<u8>);
    /// Reads one element from exactly `SIZE` bytes.
    fn get(bytes: &[u8]) -> Self;
}

macro_rules! element {
    ($t:ty, $d:ident, $n:expr) => {
        impl Element for $t {
            const DTYPE: DType = DType::$d;
            const SIZE: usize = $n;
            fn put(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            fn get(bytes: &[u8]) -> Self {
                <$t>::from_le_bytes(bytes.try_into().expect("SIZE bytes"))
            }
        }
    };
}
element!(f32, F32, 4);
element!(f64, F64, 8);
element!(i32, I32, 4);
element!(i64, I64, 8);

impl Element for bool {
    const DTYPE: DType = DType::Bool;
    const SIZE: usize = 1;
    fn put(self, out: &mut Vec<u8>) {
        out.push(self as u8);
    }
    fn get(bytes: &[u8]) -> Self {
        bytes[0] != 0
    }
}

pub(crate) fn dtype_name(d: DType) -> &'static str {
    match d {
        DType::F32 => "f32",
        DType::F64 => "f64",
        DType::I32 => "i32",
        DType::I64 => "i64",
        DType::Bool => "bool",
        DType::String => "string",
    }
}

/// Bytes per element of `d` (strings count 1 per byte of data).
pub(crate) fn width_of(d: DType) -> usize {
    match d {
        DType::F32 | DType::I32 => 4,
        DType::F64 | DType::I64 => 8,
        DType::Bool | DType::String => 1,
    }
}

/// A dense tensor: dtype, shape, row-major elements.
#[derive(Clone, PartialEq)]
pub struct Tensor {
    raw: raw::Tensor,
}

impl Tensor {
    /// A tensor of `shape` from row-major `values`; the element count must match.
    pub fn new<T: Element>(shape: &[usize], values: &[T]) -> Result<Self> {
        let count: usize = shape.iter().product();
        if count != values.len() {
            return Err(Error::new(
                Code::InvalidArgument,
                format!("{} values do not fill shape {shape:?}", values.len()),
            ));
        }
        let mut data = Vec::with_capacity(values.len() * T::SIZE);
        for &v in values {
            v.put(&mut data);
        }
        Ok(Tensor { raw: raw::Tensor { dtype: T::DTYPE, shape: shape.iter().map(|&d| d as u64).collect(), data } })
    }

    /// A scalar.
    pub fn scalar<T: Element>(value: T) -> Self {
        Tensor::new(&[], &[value]).expect("one value fills a scalar")
    }

    /// Its element type.
    pub fn dtype(&self) -> DType {
        self.raw.dtype
    }

    /// Its dimensions.
    pub fn shape(&self) -> Vec<usize> {
        self.raw.shape.iter().map(|&d| d as usize).collect()
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.raw.shape.iter().product::<u64>() as usize
    }

    /// Bytes per element (1 for strings).
    pub fn dtype_width(&self) -> usize {
        width_of(self.raw.dtype)
    }

    /// Whether it has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn check<T: Element>(&self) -> Result<()> {
        if self.raw.dtype == T::DTYPE {
            Ok(())
        } else {
            Err(Error::new(
                Code::InvalidArgument,
                format!("tensor is {}, not {}", dtype_name(self.raw.dtype), dtype_name(T::DTYPE)),
            ))
        }
    }

    /// The elements in row-major order; the error names both dtypes on a mismatch.
    pub fn to_vec<T: Element>(&self) -> Result<Vec<T>> {
        self.check::<T>()?;
        Ok(self.raw.data.chunks_exact(T::SIZE).map(T::get).collect())
    }

    /// The value of a one-element tensor.
    pub fn to_scalar<T: Element>(&self) -> Result<T> {
        let v = self.to_vec::<T>()?;
        match v.as_slice() {
            [x] => Ok(*x),
            _ => Err(Error::new(
                Code::InvalidArgument,
                format!("tensor of shape {:?} is not a single value", self.shape()),
            )),
        }
    }

    /// The elements of a string tensor (e.g. from `report_uninitialized_variables`).
    pub fn to_strings(&self) -> Result<Vec<String>> {
        if self.raw.dtype != DType::String {
            return Err(Error::new(
                Code::InvalidArgument,
                format!("tensor is {}, not string", dtype_name(self.raw.dtype)),
            ));
        }
        let mut out = Vec::new();
        let mut rest = self.raw.data.as_slice();
        while rest.len() >= 4 {
            let n = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
            let bytes = rest.get(4..4 + n).ok_or_else(|| Error::new(Code::Internal, "truncated string tensor"))?;
            out.push(String::from_utf8_lossy(bytes).into_owned());
            rest = &rest[4 + n..];
        }
        Ok(out)
    }

    pub(crate) fn from_raw(raw: raw::Tensor) -> Self {
        Tensor { raw }
    }

    pub(crate) fn into_raw(self) -> raw::Tensor {
        self.raw
    }
}

impl<T: Element> From<T> for Tensor {
    fn from(v: T) -> Self {
        Tensor::scalar(v)
    }
}

impl<T: Element> From<&[T]> for Tensor {
    fn from(v: &[T]) -> Self {
        Tensor::new(&[v.len()], v).expect("a vector fills its length")
    }
}

impl<T: Element, const N: usize> From<[T; N]> for Tensor {
    fn from(v: [T; N]) -> Self {
        Tensor::from(&v[..])
    }
}

impl<T: Element> From<Vec<T>> for Tensor {
    fn from(v: Vec<T>) -> Self {
        Tensor::from(v.as_slice())
    }
}

impl<T: Element, const R: usize, const C: usize> From<[[T; C]; R]> for Tensor {
    fn from(rows: [[T; C]; R]) -> Self {
        let flat: Vec<T> = rows.iter().flatten().copied().collect();
        Tensor::new(&[R, C], &flat).expect("rows fill the matrix")
    }
}

fn write_nested<T: fmt::Debug>(f: &mut fmt::Formatter<'_>, shape: &[usize], values: &[T]) -> fmt::Result {
    match shape.split_first() {
        None => write!(f, "{:?}", values[0]),
        Some((&n, rest)) => {
            let stride: usize = rest.iter().product();
            f.write_str("[")?;
            for i in 0..n {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write_nested(f, rest, &values[i * stride..(i + 1) * stride])?;
            }
            f.write_str("]")
        }
    }
}

/// NumPy-like: `1.0`, `[1.0, 2.0]`, `[[1, 2], [3, 4]]`, `["var"]`.
impl fmt::Display for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shape = self.shape();
        match self.raw.dtype {
            DType::F32 => write_nested(f, &shape, &self.to_vec::<f32>().map_err(|_| fmt::Error)?),
            DType::F64 => write_nested(f, &shape, &self.to_vec::<f64>().map_err(|_| fmt::Error)?),
            DType::I32 => write_nested(f, &shape, &self.to_vec::<i32>().map_err(|_| fmt::Error)?),
            DType::I64 => write_nested(f, &shape, &self.to_vec::<i64>().map_err(|_| fmt::Error)?),
            DType::Bool => write_nested(f, &shape, &self.to_vec::<bool>().map_err(|_| fmt::Error)?),
            DType::String => write_nested(f, &shape, &self.to_strings().map_err(|_| fmt::Error)?),
        }
    }
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tensor({}{:?}, {self})", dtype_name(self.raw.dtype), self.shape())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_and_display() {
        assert_eq!(Tensor::from(1.0f32).to_string(), "1.0");
        assert_eq!(Tensor::from([1.0f32, 2.5]).to_string(), "[1.0, 2.5]");
        assert_eq!(Tensor::from([[1i32, 2], [3, 4]]).to_string(), "[[1, 2], [3, 4]]");
        assert_eq!(Tensor::from(vec![true]).shape(), vec![1]);
    }

    #[test]
    fn round_trips_and_dtype_errors() {
        let t = Tensor::new(&[2, 2], &[1.0f64, 2.0, 3.0, 4.0]).unwrap();
        assert_eq!(t.to_vec::<f64>().unwrap(), vec![1.0, 2.0, 3.0, 4.0]);
        let err = t.to_vec::<f32>().unwrap_err();
        assert_eq!(err.to_string(), "invalid-argument: tensor is f64, not f32");
        assert!(t.to_scalar::<f64>().is_err());
        assert!(Tensor::new(&[3], &[1i64]).is_err());
    }
}
