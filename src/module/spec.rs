//! Argument specifications, the binary-module counterpart of `AnsibleModule(argument_spec=...)`.
//!
//! Specs are `static` data so that `--help`, the argument validation and the tests that compare a
//! module with its sidecar documentation all read the same source.

/// The type an argument is coerced to, with Ansible's lenient rules (see [`super::coerce`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamType {
    /// A string; numbers and booleans are converted to their text.
    Str,
    /// A boolean; accepts Ansible's `yes`/`no`/`on`/`off`/`1`/`0`/`true`/`false` spellings.
    Bool,
    /// An integer; numeric strings are accepted.
    Int,
    /// A floating-point number; numeric strings are accepted.
    Float,
    /// A filesystem path; `~` and `$VARS` are expanded as Ansible does.
    Path,
    /// A list; a comma-separated string is split.
    List,
    /// A mapping; a JSON string or `k=v, k2=v2` is accepted.
    Dict,
    /// Anything, passed through unchanged.
    Raw,
}

impl ParamType {
    /// The name Ansible's documentation uses for this type.
    pub const fn ansible_name(self) -> &'static str {
        match self {
            ParamType::Str => "str",
            ParamType::Bool => "bool",
            ParamType::Int => "int",
            ParamType::Float => "float",
            ParamType::Path => "path",
            ParamType::List => "list",
            ParamType::Dict => "dict",
            ParamType::Raw => "raw",
        }
    }
}

/// A default value, kept in a form that can live in a `static` spec.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DefaultValue {
    /// A string default.
    Str(&'static str),
    /// A boolean default.
    Bool(bool),
    /// An integer default.
    Int(i64),
    /// A list of strings.
    List(&'static [&'static str]),
}

impl DefaultValue {
    /// The default as the JSON value the module sees.
    pub fn to_json(self) -> serde_json::Value {
        match self {
            DefaultValue::Str(s) => s.into(),
            DefaultValue::Bool(b) => b.into(),
            DefaultValue::Int(i) => i.into(),
            DefaultValue::List(l) => l.iter().map(|s| serde_json::Value::from(*s)).collect(),
        }
    }
}

/// One module argument.
#[derive(Debug, Clone, Copy)]
pub struct Param {
    /// The canonical name.
    pub name: &'static str,
    /// The type values are coerced to.
    pub kind: ParamType,
    /// For lists, the type of each element.
    pub elements: Option<ParamType>,
    /// Whether the task must give it.
    pub required: bool,
    /// The value used when it is not given (or given as null).
    pub default: Option<DefaultValue>,
    /// The allowed values, when restricted.
    pub choices: &'static [&'static str],
    /// Other names accepted for it.
    pub aliases: &'static [&'static str],
    /// An environment variable read when the task does not give it (like kubernetes.core's
    /// `K8S_AUTH_*` fallbacks).
    pub env_fallback: Option<&'static str>,
    /// A secret: masked in `invocation` and scrubbed from every string of the result.
    pub no_log: bool,
    /// Refuse numbers for this string argument: YAML reads an unquoted `1.30` as the number 1.3,
    /// which would silently become a different version.
    pub text_only: bool,
    /// One line of help, shown by `--help`.
    pub help: &'static str,
}

impl Param {
    /// An optional argument of the given type with no default.
    pub const fn new(name: &'static str, kind: ParamType) -> Self {
        Self {
            name,
            kind,
            elements: None,
            required: false,
            default: None,
            choices: &[],
            aliases: &[],
            env_fallback: None,
            no_log: false,
            text_only: false,
            help: "",
        }
    }

    /// A string argument.
    pub const fn str(name: &'static str) -> Self {
        Self::new(name, ParamType::Str)
    }

    /// A boolean argument.
    pub const fn bool(name: &'static str, default: bool) -> Self {
        Self::new(name, ParamType::Bool).default(DefaultValue::Bool(default))
    }

    /// An integer argument.
    pub const fn int(name: &'static str) -> Self {
        Self::new(name, ParamType::Int)
    }

    /// A path argument.
    pub const fn path(name: &'static str) -> Self {
        Self::new(name, ParamType::Path)
    }

    /// A list argument whose elements have the given type.
    pub const fn list(name: &'static str, elements: ParamType) -> Self {
        let mut p = Self::new(name, ParamType::List);
        p.elements = Some(elements);
        p
    }

    /// A mapping argument.
    pub const fn dict(name: &'static str) -> Self {
        Self::new(name, ParamType::Dict)
    }

    /// Marks it required.
    pub const fn required(mut self) -> Self {
        self.required = true;
        self
    }

    /// Sets the default.
    pub const fn default(mut self, d: DefaultValue) -> Self {
        self.default = Some(d);
        self
    }

    /// Sets a string default.
    pub const fn default_str(self, s: &'static str) -> Self {
        self.default(DefaultValue::Str(s))
    }

    /// Sets an integer default.
    pub const fn default_int(self, i: i64) -> Self {
        self.default(DefaultValue::Int(i))
    }

    /// Restricts the values.
    pub const fn choices(mut self, c: &'static [&'static str]) -> Self {
        self.choices = c;
        self
    }

    /// Adds other accepted names.
    pub const fn aliases(mut self, a: &'static [&'static str]) -> Self {
        self.aliases = a;
        self
    }

    /// Reads this environment variable when the argument is not given.
    pub const fn env(mut self, var: &'static str) -> Self {
        self.env_fallback = Some(var);
        self
    }

    /// Marks the value secret.
    pub const fn no_log(mut self) -> Self {
        self.no_log = true;
        self
    }

    /// Refuses numbers (for versions, which YAML turns into floats when unquoted).
    pub const fn text_only(mut self) -> Self {
        self.text_only = true;
        self
    }

    /// Sets the one-line help.
    pub const fn help(mut self, h: &'static str) -> Self {
        self.help = h;
        self
    }
}

/// Everything the runner needs to know about a module.
#[derive(Debug, Clone, Copy)]
pub struct ModuleSpec {
    /// The module name, as in `Unsupported parameters for (calico_matrix) module`.
    pub name: &'static str,
    /// One line saying what it does.
    pub short_description: &'static str,
    /// Its arguments.
    pub params: &'static [Param],
}

impl ModuleSpec {
    /// Finds an argument by its name or one of its aliases.
    pub fn param(&self, name: &str) -> Option<&'static Param> {
        self.params
            .iter()
            .find(|p| p.name == name || p.aliases.contains(&name))
    }
}
