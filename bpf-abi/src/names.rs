//! Lookups in the lower-case name tables of the kernel's enums (commands,
//! program, map and attach types) that policies are written with.

/// The number of `name` in `table`.
pub(crate) fn by_name(table: &[(&str, u32)], name: &str) -> Option<u32> {
    table.iter().find(|(n, _)| *n == name).map(|&(_, v)| v)
}

/// The name of `value` in `table`.
pub(crate) fn short_name(
    table: &'static [(&'static str, u32)],
    value: u32,
) -> Option<&'static str> {
    table.iter().find(|&&(_, v)| v == value).map(|&(n, _)| n)
}
