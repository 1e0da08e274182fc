//! A restricted unpickler: it rebuilds plain data (None, booleans, integers, floats,
//! strings, bytes, lists, tuples, dicts) and asks a [`Policy`] about every global the
//! pickle names. Nothing is ever imported or run: a global the policy does not know is an
//! error that names it, and so is any opcode outside protocols 2-5's data subset.

use crate::{Error, Result};
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;
use std::rc::Rc;

/// A mutable container shared between the stack and the memo, as in Python.
pub type Shared<T> = Rc<RefCell<T>>;

/// A value rebuilt from a pickle; `X` is what the policy makes of the globals it allows.
#[derive(Clone, Debug)]
pub enum Value<X> {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    List(Shared<Vec<Value<X>>>),
    Tuple(Vec<Value<X>>),
    /// Insertion-ordered key/value pairs (dicts and `OrderedDict`s).
    Dict(Shared<Vec<(Value<X>, Value<X>)>>),
    /// A global the policy allowed, not yet called (`module.name`).
    Global(String, String),
    /// An object the policy built.
    Ext(X),
}

impl<X> Value<X> {
    /// A short description of the value's kind, for errors.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::Bytes(_) => "bytes",
            Value::List(_) => "list",
            Value::Tuple(_) => "tuple",
            Value::Dict(_) => "dict",
            Value::Global(..) => "global",
            Value::Ext(_) => "object",
        }
    }
}

/// What a restricted unpickling may do with the globals a pickle names.
pub trait Policy {
    /// The objects the policy builds.
    type Ext: Clone + std::fmt::Debug;
    /// Whether `module.name` may appear at all (checked when the pickle names it).
    fn allows(&self, module: &str, name: &str) -> bool;
    /// Calls the allowed global `module.name` with `args` (REDUCE and NEWOBJ).
    fn call(
        &mut self,
        module: &str,
        name: &str,
        args: Vec<Value<Self::Ext>>,
    ) -> Result<Value<Self::Ext>>;
    /// Resolves a persistent id (BINPERSID), where a pickle refers to data outside it.
    fn persistent_load(&mut self, pid: Value<Self::Ext>) -> Result<Value<Self::Ext>>;
}

enum Item<X> {
    Mark,
    V(Value<X>),
}

/// Runs the pickle in `bytes` (from `path`, named in errors) under `policy` and returns the
/// object it builds.
pub fn unpickle<P: Policy>(bytes: &[u8], policy: &mut P, path: &Path) -> Result<Value<P::Ext>> {
    let err = |pos: usize, msg: String| Error::Checkpoint {
        path: path.to_path_buf(),
        msg: format!("pickle, byte {pos}: {msg}"),
    };
    let mut stack: Vec<Item<P::Ext>> = Vec::new();
    let mut memo: HashMap<u32, Value<P::Ext>> = HashMap::new();
    let mut pos = 0usize;
    let take = |pos: &mut usize, n: usize| -> Result<&[u8]> {
        let s = pos
            .checked_add(n)
            .and_then(|end| bytes.get(*pos..end))
            .ok_or_else(|| err(*pos, format!("{n} bytes past the end (truncated)")))?;
        *pos += n;
        Ok(s)
    };
    let le = |b: &[u8]| {
        b.iter()
            .rev()
            .fold(0u64, |acc, &x| (acc << 8) | u64::from(x))
    };
    macro_rules! pop {
        () => {
            match stack.pop() {
                Some(Item::V(v)) => v,
                _ => return Err(err(pos, "stack underflow".into())),
            }
        };
    }
    macro_rules! pop_mark {
        () => {{
            let m = stack
                .iter()
                .rposition(|i| matches!(i, Item::Mark))
                .ok_or_else(|| err(pos, "no mark on the stack".into()))?;
            let items: Vec<Value<P::Ext>> = stack
                .drain(m..)
                .skip(1)
                .map(|i| match i {
                    Item::V(v) => v,
                    Item::Mark => Value::None,
                })
                .collect();
            items
        }};
    }
    loop {
        let at = pos;
        let op = take(&mut pos, 1)?[0];
        match op {
            0x80 => {
                let proto = take(&mut pos, 1)?[0];
                if proto > 5 {
                    return Err(err(at, format!("pickle protocol {proto} is not supported")));
                }
            }
            0x95 => {
                take(&mut pos, 8)?;
            }
            b'.' => {
                return match stack.pop() {
                    Some(Item::V(v)) => Ok(v),
                    _ => Err(err(at, "STOP with nothing on the stack".into())),
                }
            }
            b'(' => stack.push(Item::Mark),
            b'}' => stack.push(Item::V(Value::Dict(Rc::default()))),
            b']' => stack.push(Item::V(Value::List(Rc::default()))),
            b')' => stack.push(Item::V(Value::Tuple(Vec::new()))),
            b't' => {
                let items = pop_mark!();
                stack.push(Item::V(Value::Tuple(items)));
            }
            b'l' => {
                let items = pop_mark!();
                stack.push(Item::V(Value::List(Rc::new(RefCell::new(items)))));
            }
            b'd' => {
                let items = pop_mark!();
                let pairs = pairs(items).ok_or_else(|| err(at, "odd DICT".into()))?;
                stack.push(Item::V(Value::Dict(Rc::new(RefCell::new(pairs)))));
            }
            0x85..=0x87 => {
                let n = usize::from(op - 0x84);
                if stack.len() < n {
                    return Err(err(at, "stack underflow".into()));
                }
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(pop!());
                }
                items.reverse();
                stack.push(Item::V(Value::Tuple(items)));
            }
            b'q' | b'r' | 0x94 => {
                let key = match op {
                    b'q' => u32::from(take(&mut pos, 1)?[0]),
                    b'r' => le(take(&mut pos, 4)?) as u32,
                    _ => memo.len() as u32,
                };
                match stack.last() {
                    Some(Item::V(v)) => {
                        memo.insert(key, v.clone());
                    }
                    _ => return Err(err(at, "PUT with nothing on the stack".into())),
                }
            }
            b'h' | b'j' => {
                let key = if op == b'h' {
                    u32::from(take(&mut pos, 1)?[0])
                } else {
                    le(take(&mut pos, 4)?) as u32
                };
                let v = memo
                    .get(&key)
                    .ok_or_else(|| err(at, format!("memo key {key} was never stored")))?;
                stack.push(Item::V(v.clone()));
            }
            b'J' => {
                let v = le(take(&mut pos, 4)?) as u32 as i32;
                stack.push(Item::V(Value::Int(i64::from(v))));
            }
            b'K' => stack.push(Item::V(Value::Int(i64::from(take(&mut pos, 1)?[0])))),
            b'M' => stack.push(Item::V(Value::Int(le(take(&mut pos, 2)?) as i64))),
            0x8a => {
                let n = usize::from(take(&mut pos, 1)?[0]);
                let b = take(&mut pos, n)?;
                if n > 8 {
                    return Err(err(
                        at,
                        format!("an integer of {n} bytes does not fit in 64 bits"),
                    ));
                }
                // Two's complement, little-endian, sign-extended from its top byte.
                let mut v = le(b) as i64;
                if n > 0 && n < 8 && b[n - 1] & 0x80 != 0 {
                    v -= 1i64 << (8 * n);
                }
                stack.push(Item::V(Value::Int(v)));
            }
            b'N' => stack.push(Item::V(Value::None)),
            0x88 => stack.push(Item::V(Value::Bool(true))),
            0x89 => stack.push(Item::V(Value::Bool(false))),
            b'G' => {
                let mut a = [0u8; 8];
                a.copy_from_slice(take(&mut pos, 8)?);
                stack.push(Item::V(Value::Float(f64::from_be_bytes(a))));
            }
            b'X' | 0x8c | 0x8d => {
                let n = match op {
                    b'X' => le(take(&mut pos, 4)?),
                    0x8c => u64::from(take(&mut pos, 1)?[0]),
                    _ => le(take(&mut pos, 8)?),
                };
                let n = usize::try_from(n).map_err(|_| err(at, "string too long".into()))?;
                let s = std::str::from_utf8(take(&mut pos, n)?)
                    .map_err(|_| err(at, "a string that is not UTF-8".into()))?;
                stack.push(Item::V(Value::Str(s.to_string())));
            }
            b'B' | b'C' | 0x8e => {
                let n = match op {
                    b'B' => le(take(&mut pos, 4)?),
                    b'C' => u64::from(take(&mut pos, 1)?[0]),
                    _ => le(take(&mut pos, 8)?),
                };
                let n = usize::try_from(n).map_err(|_| err(at, "bytes too long".into()))?;
                stack.push(Item::V(Value::Bytes(take(&mut pos, n)?.to_vec())));
            }
            b'c' => {
                let line = |pos: &mut usize| -> Result<String> {
                    let rest = &bytes[(*pos).min(bytes.len())..];
                    let n = rest
                        .iter()
                        .position(|&b| b == b'\n')
                        .ok_or_else(|| err(*pos, "GLOBAL without a newline".into()))?;
                    let s = String::from_utf8_lossy(&rest[..n]).into_owned();
                    *pos += n + 1;
                    Ok(s)
                };
                let module = line(&mut pos)?;
                let name = line(&mut pos)?;
                stack.push(Item::V(global(policy, module, name, at, &err)?));
            }
            0x93 => {
                let name = pop!();
                let module = pop!();
                match (module, name) {
                    (Value::Str(m), Value::Str(n)) => {
                        stack.push(Item::V(global(policy, m, n, at, &err)?))
                    }
                    _ => return Err(err(at, "STACK_GLOBAL needs two strings".into())),
                }
            }
            b'R' | 0x81 => {
                let args = pop!();
                let callable = pop!();
                let args = match args {
                    Value::Tuple(a) => a,
                    other => return Err(err(at, format!("call arguments are a {}", other.kind()))),
                };
                let v = match callable {
                    Value::Global(m, n) => policy.call(&m, &n, args)?,
                    other => return Err(err(at, format!("calling a {}", other.kind()))),
                };
                stack.push(Item::V(v));
            }
            b'b' => {
                let _state = pop!();
                match stack.last() {
                    // An OrderedDict's attributes (a state dict's `_metadata`) and a
                    // tensor's extra state carry nothing the tensors need.
                    Some(Item::V(Value::Dict(_) | Value::Ext(_))) => {}
                    Some(Item::V(v)) => {
                        return Err(err(at, format!("BUILD on a {}", v.kind())));
                    }
                    _ => return Err(err(at, "stack underflow".into())),
                }
            }
            b's' => {
                let v = pop!();
                let k = pop!();
                match stack.last() {
                    Some(Item::V(Value::Dict(d))) => d.borrow_mut().push((k, v)),
                    _ => return Err(err(at, "SETITEM on something not a dict".into())),
                }
            }
            b'u' => {
                let items = pop_mark!();
                let kv = pairs(items).ok_or_else(|| err(at, "odd SETITEMS".into()))?;
                match stack.last() {
                    Some(Item::V(Value::Dict(d))) => d.borrow_mut().extend(kv),
                    _ => return Err(err(at, "SETITEMS on something not a dict".into())),
                }
            }
            b'a' => {
                let v = pop!();
                match stack.last() {
                    Some(Item::V(Value::List(l))) => l.borrow_mut().push(v),
                    _ => return Err(err(at, "APPEND on something not a list".into())),
                }
            }
            b'e' => {
                let items = pop_mark!();
                match stack.last() {
                    Some(Item::V(Value::List(l))) => l.borrow_mut().extend(items),
                    _ => return Err(err(at, "APPENDS on something not a list".into())),
                }
            }
            b'Q' => {
                let pid = pop!();
                stack.push(Item::V(policy.persistent_load(pid)?));
            }
            other => {
                return Err(err(
                    at,
                    format!(
                    "opcode 0x{other:02x} is not allowed (only plain data and tensors are read)"
                ),
                ))
            }
        }
    }
}

fn global<P: Policy>(
    policy: &P,
    module: String,
    name: String,
    at: usize,
    err: &impl Fn(usize, String) -> Error,
) -> Result<Value<P::Ext>> {
    if policy.allows(&module, &name) {
        Ok(Value::Global(module, name))
    } else {
        Err(err(
            at,
            format!("the pickle names `{module}.{name}`, which is not allowed (nothing is imported or run; only tensors and plain containers are read)"),
        ))
    }
}

fn pairs<X>(items: Vec<Value<X>>) -> Option<Vec<(Value<X>, Value<X>)>> {
    if !items.len().is_multiple_of(2) {
        return None;
    }
    let mut it = items.into_iter();
    let mut out = Vec::new();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((k, v));
    }
    Some(out)
}
