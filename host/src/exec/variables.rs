//! Variable storage of one device: values by shared name, with atomic updates.
//!
//! Every graph that declares a variable of the same name on the same device
//! gets the same [`Variable`]; its value lives here, not in any graph.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use super::budget::{ByteBudget, VARIABLE_OVERHEAD};
use crate::budget::byte_size;
use crate::error::{Error, Result};
use crate::tensor::{Tensor, TensorType};

/// What the host holds for a variable named `name` besides its value.
fn bookkeeping_bytes(name: &str) -> usize {
    name.len() + VARIABLE_OVERHEAD
}

/// One variable's slot.
#[derive(Debug)]
pub struct Variable {
    name: String,
    device: String,
    ty: TensorType,
    value: Mutex<Option<Tensor>>,
    budget: Option<Arc<ByteBudget>>,
}

impl Variable {
    /// The shared name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The declared type.
    pub fn tensor_type(&self) -> &TensorType {
        &self.ty
    }

    fn lock(&self) -> MutexGuard<'_, Option<Tensor>> {
        // A poisoned lock means a kernel panicked mid-update; the value it
        // guards is still a whole tensor, so keep serving it.
        self.value.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What the host holds for it besides its value: its name and slot.
    fn bookkeeping_bytes(&self) -> usize {
        bookkeeping_bytes(&self.name)
    }

    fn uninitialized(&self) -> Error {
        Error::precondition(format!(
            "variable '{}' on {} is uninitialized: run its initializer (or global-variables-initializer) first",
            self.name, self.device
        ))
    }

    /// Whether it has a value.
    pub fn is_initialized(&self) -> bool {
        self.lock().is_some()
    }

    /// The current value; `failed-precondition` if it has none yet.
    pub fn read(&self) -> Result<Tensor> {
        self.lock().clone().ok_or_else(|| self.uninitialized())
    }

    /// Replaces the value (shape and dtype were checked when the graph was built).
    pub fn assign(&self, value: Tensor) -> Result<Tensor> {
        if !self.ty.accepts(&value) {
            return Err(Error::invalid(format!(
                "cannot assign {} to variable '{}' of type {}",
                value.tensor_type(),
                self.name,
                self.ty
            )));
        }
        let mut guard = self.lock();
        self.charge(guard.as_ref(), &value)?;
        *guard = Some(value.clone());
        Ok(value)
    }

    fn charge(&self, old: Option<&Tensor>, new: &Tensor) -> Result<()> {
        match &self.budget {
            Some(b) => b.recharge(&format_args!("variable '{}'", self.name), old.map_or(0, byte_size), byte_size(new)),
            None => Ok(()),
        }
    }

    /// Read-modify-write under the variable's lock: concurrent updates never
    /// lose one another.
    pub fn update(&self, f: impl FnOnce(&Tensor) -> Result<Tensor>) -> Result<Tensor> {
        let mut guard = self.lock();
        let old = guard.as_ref().ok_or_else(|| self.uninitialized())?;
        let new = f(old)?;
        self.charge(Some(old), &new)?;
        *guard = Some(new.clone());
        Ok(new)
    }
}

impl Variable {
    /// Updates several variables as one (a variable and its optimizer
    /// slots): all their locks are held while `f` runs, taken in address
    /// order so that overlapping updates cannot deadlock. `f` sees the
    /// values in the order given and must not change their shapes. Returns
    /// the first variable's new value.
    pub fn update_together(vars: &[Arc<Variable>], f: impl FnOnce(&mut [&mut Tensor]) -> Result<()>) -> Result<Tensor> {
        let mut guards = Self::lock_all(vars)?;
        let mut values: Vec<&mut Tensor> = Vec::with_capacity(vars.len());
        for (i, guard) in guards.iter_mut().enumerate() {
            match guard.as_mut() {
                Some(t) => values.push(t),
                None => return Err(vars[i].uninitialized()),
            }
        }
        let shapes: Vec<Vec<usize>> = values.iter().map(|t| t.shape().to_vec()).collect();
        f(&mut values)?;
        if values.iter().zip(&shapes).any(|(t, s)| t.shape() != &s[..]) {
            return Err(Error::internal("a fused update changed a variable's shape"));
        }
        Ok(values[0].clone())
    }
}

impl Variable {
    /// Locks `vars` in address order (so overlapping groups cannot deadlock);
    /// the guards are in the order given. The same variable twice is an error.
    fn lock_all(vars: &[Arc<Variable>]) -> Result<Vec<MutexGuard<'_, Option<Tensor>>>> {
        for (i, a) in vars.iter().enumerate() {
            if vars[..i].iter().any(|b| Arc::ptr_eq(a, b)) {
                return Err(Error::invalid(format!("variable '{}' is given twice to one op", a.name)));
            }
        }
        let mut order: Vec<usize> = (0..vars.len()).collect();
        order.sort_by_key(|&i| Arc::as_ptr(&vars[i]) as usize);
        let mut guards: Vec<Option<MutexGuard<'_, Option<Tensor>>>> = (0..vars.len()).map(|_| None).collect();
        for i in order {
            guards[i] = Some(vars[i].lock());
        }
        Ok(guards.into_iter().map(|g| g.expect("locked")).collect())
    }

    /// The values of `vars` at one moment (all locks held together), by name.
    pub fn read_together(vars: &[Arc<Variable>]) -> Result<Vec<(String, Tensor)>> {
        let guards = Self::lock_all(vars)?;
        vars.iter()
            .zip(&guards)
            .map(|(v, g)| g.as_ref().map(|t| (v.name.clone(), t.clone())).ok_or_else(|| v.uninitialized()))
            .collect()
    }

    /// Assigns `values` to `vars` as one: every value is checked against its
    /// variable's type and charged to the budget before any is stored. With
    /// `only_if_uninitialized`, does nothing (and returns false) unless none
    /// of them has a value.
    pub fn assign_together(vars: &[Arc<Variable>], values: Vec<Tensor>, only_if_uninitialized: bool) -> Result<bool> {
        for (v, t) in vars.iter().zip(&values) {
            if !v.ty.accepts(t) {
                return Err(Error::invalid(format!(
                    "cannot assign {} to variable '{}' of type {}",
                    t.tensor_type(),
                    v.name,
                    v.ty
                )));
            }
        }
        let mut guards = Self::lock_all(vars)?;
        if only_if_uninitialized && guards.iter().any(|g| g.is_some()) {
            return Ok(false);
        }
        for i in 0..vars.len() {
            if let Err(e) = vars[i].charge(guards[i].as_ref(), &values[i]) {
                for j in 0..i {
                    if let Some(b) = &vars[j].budget {
                        let (new, old) = (byte_size(&values[j]), guards[j].as_ref().map_or(0, byte_size));
                        let _ = b.recharge(&format_args!("variable '{}'", vars[j].name), new, old);
                    }
                }
                return Err(e);
            }
        }
        for (g, t) in guards.iter_mut().zip(values) {
            **g = Some(t);
        }
        Ok(true)
    }
}

impl Drop for Variable {
    fn drop(&mut self) {
        // Give the bytes back: the budget may outlive this variable.
        if let Some(b) = &self.budget {
            b.release(self.lock().as_ref().map_or(0, byte_size) + self.bookkeeping_bytes());
        }
    }
}

/// The variables of one device.
#[derive(Debug)]
pub struct VariableStore {
    device: String,
    vars: Mutex<HashMap<String, Arc<Variable>>>,
    budget: Option<Arc<ByteBudget>>,
}

impl VariableStore {
    /// An empty store for the device named `device`.
    pub fn new(device: impl Into<String>) -> Self {
        VariableStore { device: device.into(), vars: Mutex::new(HashMap::new()), budget: None }
    }

    /// The budget its values are charged to, if any.
    pub fn budget(&self) -> Option<&Arc<ByteBudget>> {
        self.budget.as_ref()
    }

    /// An empty store whose variables' values are charged to `budget`.
    pub fn with_budget(device: impl Into<String>, budget: Arc<ByteBudget>) -> Self {
        VariableStore { device: device.into(), vars: Mutex::new(HashMap::new()), budget: Some(budget) }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<Variable>>> {
        self.vars.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The variable `name`, created uninitialized on first use. A graph that
    /// declares an existing name with another type gets `invalid-argument`.
    pub fn get_or_create(&self, name: &str, ty: &TensorType) -> Result<Arc<Variable>> {
        let mut vars = self.lock();
        if let Some(v) = vars.get(name) {
            if v.ty != *ty {
                return Err(Error::invalid(format!(
                    "variable '{name}' on {} already exists as {}, but this graph declares it as {ty}",
                    self.device, v.ty
                )));
            }
            return Ok(v.clone());
        }
        if let Some(b) = &self.budget {
            b.charge(&format_args!("variable '{name}' on {}", self.device), bookkeeping_bytes(name))?;
        }
        let v = Arc::new(Variable {
            name: name.to_string(),
            device: self.device.clone(),
            ty: ty.clone(),
            value: Mutex::new(None),
            budget: self.budget.clone(),
        });
        vars.insert(name.to_string(), v.clone());
        Ok(v)
    }

    /// The variable `name`, if any graph has declared it here.
    pub fn get(&self, name: &str) -> Option<Arc<Variable>> {
        self.lock().get(name).cloned()
    }

    /// Bytes the values of its initialized variables hold.
    /// Waits for no update in progress while it holds the store's lock
    /// (which every step declaring a variable takes).
    pub fn value_bytes(&self) -> usize {
        let vars: Vec<Arc<Variable>> = self.lock().values().cloned().collect();
        vars.iter().map(|v| v.lock().as_ref().map_or(0, byte_size)).sum()
    }

    /// The current values of all initialized variables, sorted by name.
    pub fn snapshot(&self) -> Vec<(String, Tensor)> {
        let mut out: Vec<(String, Tensor)> =
            self.lock().values().filter_map(|v| v.lock().clone().map(|t| (v.name.clone(), t))).collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::DType;

    #[test]
    fn same_name_shares_one_slot() {
        let store = VariableStore::new("/job:localhost/replica:0/task:0/device:CPU:0");
        let ty = TensorType::scalar(DType::F32);
        let a = store.get_or_create("var", &ty).unwrap();
        let b = store.get_or_create("var", &ty).unwrap();
        a.assign(Tensor::scalar_f32(3.0)).unwrap();
        assert_eq!(b.read().unwrap(), Tensor::scalar_f32(3.0));
        assert_eq!(store.snapshot(), vec![("var".to_string(), Tensor::scalar_f32(3.0))]);
    }

    #[test]
    fn uninitialized_read_names_variable_and_device() {
        let store = VariableStore::new("/job:ps/replica:0/task:0/device:CPU:0");
        let v = store.get_or_create("w", &TensorType::scalar(DType::F32)).unwrap();
        let err = v.read().unwrap_err().to_string();
        assert!(err.starts_with("failed-precondition") && err.contains("'w' on /job:ps"), "{err}");
    }

    #[test]
    fn redeclaring_with_another_type_is_rejected() {
        let store = VariableStore::new("cpu");
        store.get_or_create("v", &TensorType::known(DType::F32, &[2])).unwrap();
        let err = store.get_or_create("v", &TensorType::known(DType::F32, &[3])).unwrap_err();
        assert!(err.to_string().contains("already exists as f32[2]"), "{err}");
    }

    #[test]
    fn concurrent_updates_lose_nothing() {
        let store = Arc::new(VariableStore::new("cpu"));
        let v = store.get_or_create("n", &TensorType::scalar(DType::F32)).unwrap();
        v.assign(Tensor::scalar_f32(0.0)).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let v = v.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        v.update(|t| Ok(Tensor::scalar_f32(t.as_f32_vec().unwrap()[0] + 1.0))).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(v.read().unwrap(), Tensor::scalar_f32(4000.0));
    }

    #[test]
    fn budget_refuses_growth_past_its_limit_and_frees_on_drop() {
        // The name and slot cost their bytes too, from the moment the variable exists.
        let base = "v".len() + VARIABLE_OVERHEAD;
        let budget = Arc::new(ByteBudget::new("experiment 'a'", base + 64));
        let store = VariableStore::with_budget("/job:w/replica:0/task:0/device:CPU:0", budget.clone());
        let ty = TensorType { dtype: DType::F32, shape: vec![None] };
        let v = store.get_or_create("v", &ty).unwrap();
        assert_eq!(budget.used(), base);
        v.assign(Tensor::from_f32(&[10], vec![1.0; 10]).unwrap()).unwrap();
        assert_eq!(budget.used(), base + 40);
        let err = v.assign(Tensor::from_f32(&[20], vec![1.0; 20]).unwrap()).unwrap_err();
        assert_eq!(err.code(), crate::error::Code::ResourceExhausted);
        assert!(err.to_string().contains("variable-bytes limit") && err.to_string().contains("'v'"), "{err}");
        assert_eq!(v.read().unwrap().len(), 10, "a refused assign changes nothing");
        v.assign(Tensor::from_f32(&[4], vec![1.0; 4]).unwrap()).unwrap();
        assert_eq!(budget.used(), base + 16);
        drop(v);
        drop(store);
        assert_eq!(budget.used(), 0);
    }
}
