//! The typed pass's view of a YAML document: what Compose ignores, or
//! applies on the value tree instead, is kept out of serde's way, so that the
//! model's `deny_unknown_fields` still names every other key with its line.
//!
//! - `x-*` keys of a struct (a service, a network, a volume, a build...) are
//!   extension fields: skipped, though their text must still interpolate, as
//!   Compose interpolates the whole file.
//! - `<<` merge keys (YAML's merge type) are applied: the merged entries come
//!   after the map's own, and a key the map writes itself wins. A merged
//!   value carries no line of its own, so its errors name the enclosing map.
//! - `!reset` and `!override` tags are looked through (their value is
//!   checked as if untagged), and an entry the file resets is skipped: the
//!   merge rules apply them on the file's value tree.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::value::StringDeserializer;
use serde::de::{
    self, DeserializeSeed, Deserializer, EnumAccess, IgnoredAny, MapAccess, SeqAccess,
    VariantAccess, Visitor,
};
use serde_yaml::{Mapping, Value};

/// Where a file resets entries (`!reset`): a tree of map keys and sequence
/// indices, each leaf a reset entry.
#[derive(Debug, Default, PartialEq)]
pub struct Resets {
    pub children: BTreeMap<String, Resets>,
    pub here: bool,
}

impl Resets {
    pub fn add(&mut self, path: &[String]) {
        let mut node = self;
        for key in path {
            node = node.children.entry(key.clone()).or_default();
        }
        node.here = true;
    }

    fn child(&self, key: &str) -> Option<&Resets> {
        self.children.get(key)
    }
}

/// A deserializer seen through the rules above.
pub struct Lenient<'r, D> {
    de: D,
    resets: Option<&'r Resets>,
}

impl<'r, D> Lenient<'r, D> {
    pub fn new(de: D, resets: Option<&'r Resets>) -> Lenient<'r, D> {
        Lenient { de, resets }
    }
}

/// How the caller asked to deserialize, so that a tagged value can be asked
/// for the same way once its tag is looked through.
#[derive(Clone, Copy)]
enum Kind {
    Any,
    Option,
    Seq,
    Map,
    Struct(&'static str, &'static [&'static str]),
    Enum,
}

macro_rules! forward_any {
    ($($method:ident)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
            self.de.$method(Wrap::new(visitor, Kind::Any, self.resets))
        }
    )*};
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Lenient<'_, D> {
    type Error = D::Error;

    forward_any! {
        deserialize_any deserialize_bool deserialize_i8 deserialize_i16 deserialize_i32
        deserialize_i64 deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64
        deserialize_f32 deserialize_f64 deserialize_char deserialize_str deserialize_string
        deserialize_bytes deserialize_byte_buf deserialize_unit deserialize_identifier
        deserialize_ignored_any
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.de
            .deserialize_option(Wrap::new(visitor, Kind::Option, self.resets))
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.de
            .deserialize_seq(Wrap::new(visitor, Kind::Seq, self.resets))
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.de
            .deserialize_map(Wrap::new(visitor, Kind::Map, self.resets))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let kind = Kind::Struct(name, fields);
        self.de
            .deserialize_struct(name, fields, Wrap::new(visitor, kind, self.resets))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.de
            .deserialize_enum(name, variants, Wrap::new(visitor, Kind::Enum, self.resets))
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.de
            .deserialize_unit_struct(name, Wrap::new(visitor, Kind::Any, self.resets))
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.de
            .deserialize_newtype_struct(name, Wrap::new(visitor, Kind::Any, self.resets))
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.de
            .deserialize_tuple(len, Wrap::new(visitor, Kind::Seq, self.resets))
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.de
            .deserialize_tuple_struct(name, len, Wrap::new(visitor, Kind::Seq, self.resets))
    }

    fn is_human_readable(&self) -> bool {
        self.de.is_human_readable()
    }
}

/// A visitor whose maps and sequences are seen leniently in turn.
struct Wrap<'r, V> {
    visitor: V,
    kind: Kind,
    resets: Option<&'r Resets>,
}

impl<'r, V> Wrap<'r, V> {
    fn new(visitor: V, kind: Kind, resets: Option<&'r Resets>) -> Wrap<'r, V> {
        Wrap {
            visitor,
            kind,
            resets,
        }
    }
}

macro_rules! forward_visit {
    ($($method:ident($ty:ty))*) => {$(
        fn $method<E: de::Error>(self, v: $ty) -> Result<V::Value, E> {
            self.visitor.$method(v)
        }
    )*};
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Wrap<'_, V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        self.visitor.expecting(f)
    }

    forward_visit! {
        visit_bool(bool) visit_i8(i8) visit_i16(i16) visit_i32(i32) visit_i64(i64)
        visit_u8(u8) visit_u16(u16) visit_u32(u32) visit_u64(u64) visit_f32(f32)
        visit_f64(f64) visit_char(char) visit_str(&str) visit_borrowed_str(&'de str)
        visit_string(String) visit_bytes(&[u8]) visit_borrowed_bytes(&'de [u8])
        visit_byte_buf(Vec<u8>)
    }

    fn visit_none<E: de::Error>(self) -> Result<V::Value, E> {
        self.visitor.visit_none()
    }

    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        self.visitor.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        self.visitor.visit_some(Lenient::new(d, self.resets))
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        self.visitor
            .visit_newtype_struct(Lenient::new(d, self.resets))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        self.visitor.visit_seq(Seq {
            seq,
            resets: self.resets,
            index: 0,
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        let structure = match self.kind {
            Kind::Struct(_, fields) => Some(fields),
            _ => None,
        };
        self.visitor
            .visit_map(Map::new(map, structure, self.resets))
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<V::Value, A::Error> {
        if let Kind::Enum = self.kind {
            return self.visitor.visit_enum(data);
        }
        // Anything else that arrives as an enum is a tagged YAML value.
        let (tag, variant): (String, A::Variant) = data.variant()?;
        match tag.trim_start_matches('!') {
            "reset" | "override" => variant.newtype_variant_seed(Replay {
                visitor: self.visitor,
                kind: self.kind,
                resets: self.resets,
            }),
            other => Err(de::Error::custom(format!(
                "the YAML tag !{other} is not supported (Compose's are !reset and !override)"
            ))),
        }
    }
}

/// Asks for a tagged value's content the way the caller asked for the value.
struct Replay<'r, V> {
    visitor: V,
    kind: Kind,
    resets: Option<&'r Resets>,
}

impl<'de, V: Visitor<'de>> DeserializeSeed<'de> for Replay<'_, V> {
    type Value = V::Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        let d = Lenient::new(d, self.resets);
        match self.kind {
            Kind::Option => d.deserialize_option(self.visitor),
            Kind::Seq => d.deserialize_seq(self.visitor),
            Kind::Map => d.deserialize_map(self.visitor),
            Kind::Struct(name, fields) => d.deserialize_struct(name, fields, self.visitor),
            Kind::Any | Kind::Enum => d.deserialize_any(self.visitor),
        }
    }
}

/// A seed seen leniently, under the resets of its place.
struct Seed<'r, S> {
    seed: S,
    resets: Option<&'r Resets>,
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Seed<'_, S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<S::Value, D::Error> {
        self.seed.deserialize(Lenient::new(d, self.resets))
    }
}

struct Seq<'r, A> {
    seq: A,
    resets: Option<&'r Resets>,
    index: usize,
}

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for Seq<'_, A> {
    type Error = A::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, A::Error> {
        loop {
            let resets = self.resets.and_then(|r| r.child(&self.index.to_string()));
            self.index += 1;
            if resets.is_some_and(|r| r.here) {
                // An item the file resets is not part of what it writes.
                if self.seq.next_element::<IgnoredAny>()?.is_none() {
                    return Ok(None);
                }
                continue;
            }
            return self.seq.next_element_seed(Seed { seed, resets });
        }
    }
}

/// A map with its extension fields skipped and its `<<` entries merged.
struct Map<'r, A> {
    map: A,
    /// A struct's map (its fields), where `x-*` keys it does not declare
    /// are extension fields; elsewhere (`environment`, `labels`) such a key
    /// is data.
    structure: Option<&'static [&'static str]>,
    resets: Option<&'r Resets>,
    /// The keys the map writes itself.
    seen: Vec<String>,
    /// Entries from `<<`, first source first, handed out after the map's own.
    merged: std::vec::IntoIter<(String, Value)>,
    /// The value of the merged entry whose key was handed out last.
    pending: Option<Value>,
    /// The resets under the key handed out last.
    current: Option<&'r Resets>,
    exhausted: bool,
}

impl<'r, A> Map<'r, A> {
    fn new(
        map: A,
        structure: Option<&'static [&'static str]>,
        resets: Option<&'r Resets>,
    ) -> Map<'r, A> {
        Map {
            map,
            structure,
            resets,
            seen: Vec::new(),
            merged: Vec::new().into_iter(),
            pending: None,
            current: None,
            exhausted: false,
        }
    }
}

/// What reading one key gave: the key, or a key to skip.
enum Key<V> {
    Keep(V),
    Skip(Skipped),
}

#[derive(Clone, Copy, PartialEq)]
enum Skipped {
    Extension,
    Merge,
    Reset,
}

impl<'de, 'r, A: MapAccess<'de>> MapAccess<'de> for Map<'r, A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        // The seed stays in its slot until a key is kept: a skipped key, or
        // the end of the map's own entries, leaves it for the next key.
        let mut slot = Some(seed);
        while !self.exhausted {
            let capture = Capture {
                slot: &mut slot,
                structure: self.structure,
                resets: self.resets,
                seen: &mut self.seen,
            };
            match self.map.next_key_seed(capture)? {
                None => self.exhausted = true,
                Some(Key::Keep(key)) => {
                    self.current = self
                        .seen
                        .last()
                        .and_then(|k| self.resets.and_then(|r| r.child(k)));
                    return Ok(Some(key));
                }
                Some(Key::Skip(why)) => self.skip_value(why)?,
            }
        }
        let Some(seed) = slot else {
            return Err(de::Error::custom("a map key was read twice"));
        };
        for (key, value) in self.merged.by_ref() {
            if self.seen.contains(&key) {
                continue;
            }
            let resets = self.resets.and_then(|r| r.child(&key));
            if resets.is_some_and(|r| r.here) {
                continue;
            }
            self.current = resets;
            self.pending = Some(value);
            return seed
                .deserialize(StringDeserializer::<A::Error>::new(key))
                .map(Some);
        }
        Ok(None)
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, A::Error> {
        let resets = self.current.take();
        match self.pending.take() {
            Some(value) => seed
                .deserialize(Lenient::new(value, resets))
                .map_err(de::Error::custom),
            None => self.map.next_value_seed(Seed { seed, resets }),
        }
    }
}

impl<'de, A: MapAccess<'de>> Map<'_, A> {
    fn skip_value(&mut self, why: Skipped) -> Result<(), A::Error> {
        match why {
            Skipped::Reset => self.map.next_value::<IgnoredAny>().map(drop),
            Skipped::Extension => self.map.next_value_seed(Interpolates),
            Skipped::Merge => {
                let mut value: Value = self.map.next_value()?;
                value.apply_merge().map_err(de::Error::custom)?;
                let mut entries: Vec<(String, Value)> = self.merged.by_ref().collect();
                for source in merge_sources(value).map_err(de::Error::custom)? {
                    for (key, value) in source {
                        let key = key_text(&key).map_err(de::Error::custom)?;
                        if !entries.iter().any(|(k, _)| *k == key) {
                            entries.push((key, value));
                        }
                    }
                }
                self.merged = entries.into_iter();
                Ok(())
            }
        }
    }
}

/// The maps a `<<` value merges: one map, or a list of them.
fn merge_sources(value: Value) -> Result<Vec<Mapping>, String> {
    match value {
        Value::Mapping(map) => Ok(vec![map]),
        Value::Sequence(items) => items
            .into_iter()
            .map(|item| match item {
                Value::Mapping(map) => Ok(map),
                _ => Err("a `<<` list may hold only maps".to_owned()),
            })
            .collect(),
        _ => Err("`<<` merges a map or a list of maps".to_owned()),
    }
}

/// A map key as text: Compose's keys are strings; a number or a boolean is
/// read as it is written.
pub fn key_text(key: &Value) -> Result<String, String> {
    match key {
        Value::String(text) => Ok(text.clone()),
        Value::Number(number) => Ok(number.to_string()),
        Value::Bool(flag) => Ok(flag.to_string()),
        Value::Null => Ok("null".to_owned()),
        _ => Err("a map key must be a string".to_owned()),
    }
}

/// Reads one key as text, decides whether it is skipped, and otherwise hands
/// it to the caller's seed inside the parser's own call, so that an unknown
/// key is reported at its own line.
struct Capture<'a, 'r, K> {
    slot: &'a mut Option<K>,
    structure: Option<&'static [&'static str]>,
    resets: Option<&'r Resets>,
    seen: &'a mut Vec<String>,
}

impl<'de, K: DeserializeSeed<'de>> DeserializeSeed<'de> for Capture<'_, '_, K> {
    type Value = Key<K::Value>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de, K: DeserializeSeed<'de>> Visitor<'de> for Capture<'_, '_, K> {
    type Value = Key<K::Value>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Self::Value, E> {
        let skipped = if key == "<<" {
            Some(Skipped::Merge)
        } else if key.starts_with("x-") && self.structure.is_some_and(|f| !f.contains(&key)) {
            Some(Skipped::Extension)
        } else if self
            .resets
            .and_then(|r| r.child(key))
            .is_some_and(|r| r.here)
        {
            Some(Skipped::Reset)
        } else {
            None
        };
        if let Some(why) = skipped {
            return Ok(Key::Skip(why));
        }
        let seed = self
            .slot
            .take()
            .ok_or_else(|| E::custom("a map key was read twice"))?;
        self.seen.push(key.to_owned());
        seed.deserialize(StringDeserializer::<E>::new(key.to_owned()))
            .map(Key::Keep)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        self.visit_str(&v.to_string())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        self.visit_str(&v.to_string())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        self.visit_str(&v.to_string())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        self.visit_str(&v.to_string())
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        self.visit_str("null")
    }
}

/// Walks any value, interpolating each string so that a broken `${...}`
/// under an extension field is reported at its line.
struct Interpolates;

impl<'de> DeserializeSeed<'de> for Interpolates {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Interpolates {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        super::interpolate::interpolated::<E>(v).map(drop)
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Interpolates)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_key::<IgnoredAny>()?.is_some() {
            map.next_value_seed(Interpolates)?;
        }
        Ok(())
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<(), A::Error> {
        let (_, variant): (IgnoredAny, A::Variant) = data.variant()?;
        variant.newtype_variant_seed(Interpolates)
    }
}
