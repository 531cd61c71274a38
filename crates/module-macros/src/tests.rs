//! Each refusal of the attribute, by its message. (The `compile_fail` doc
//! tests in lib.rs check that each really stops the build.)

use proc_macro2::TokenStream;
use quote::quote;

use crate::expand::generate;

/// The refusal for `attr` on `item`, as text; panics if it was accepted.
fn refusal(attr: TokenStream, item: TokenStream) -> String {
    let block = syn::parse2(item).expect("the test's impl block parses");
    match generate(attr, &block) {
        Ok(tokens) => panic!("accepted, generating {tokens}"),
        Err(error) => error.into_iter().map(|error| error.to_string()).collect::<Vec<_>>().join("\n"),
    }
}

fn accepted(attr: TokenStream, item: TokenStream) -> String {
    let block = syn::parse2(item).expect("the test's impl block parses");
    generate(attr, &block).unwrap_or_else(|error| panic!("refused: {error}")).to_string()
}

fn args() -> TokenStream {
    quote!(name = "ledger", version = "2.0.0", layout = 2)
}

#[test]
fn every_argument_is_required() {
    let block = quote!(impl Ledger {});
    let missing = refusal(quote!(version = "1", layout = 1), block.clone());
    assert!(missing.starts_with("#[module] needs `name`"), "{missing}");
    let missing = refusal(quote!(name = "ledger", layout = 1), block.clone());
    assert!(missing.starts_with("#[module] needs `version`"), "{missing}");
    let missing = refusal(quote!(name = "ledger", version = "1"), block.clone());
    assert!(missing.starts_with("#[module] needs `layout`"), "{missing}");
    assert!(missing.contains("write #[hotswap_module::module(name = \"ledger\""), "{missing}");
}

#[test]
fn layout_zero_empty_names_unknown_and_repeated_keys_are_refused() {
    let block = quote!(impl Ledger {});
    let zero = refusal(quote!(name = "ledger", version = "1", layout = 0), block.clone());
    assert!(zero.contains("layout 0 means \"no layout\""), "{zero}");
    assert!(zero.contains("`layout = 1`"), "{zero}");
    let empty = refusal(quote!(name = "", version = "1", layout = 1), block.clone());
    assert!(empty.contains("`name` is empty"), "{empty}");
    let unknown = refusal(quote!(name = "ledger", version = "1", layout = 1, codec = "json"), block.clone());
    assert!(unknown.contains("not `codec`"), "{unknown}");
    let twice = refusal(quote!(name = "a", name = "b", version = "1", layout = 1), block.clone());
    assert!(twice.contains("`name` is given twice"), "{twice}");
    let text = refusal(quote!(name = "ledger", version = "1", layout = "2"), block);
    assert!(text.contains("`layout` is a number"), "{text}");
}

#[test]
fn a_method_takes_at_most_one_argument() {
    let message = refusal(args(), quote!(impl Ledger { pub fn add(&mut self, a: u32, b: u32) {} }));
    assert!(message.starts_with("`add` takes two arguments"), "{message}");
    assert!(message.contains("put them in one struct"), "{message}");
    // The context does not count.
    accepted(args(), quote!(impl Ledger { pub fn add(&mut self, ctx: &mut Context, a: u32) {} }));
}

#[test]
fn the_context_comes_first_and_as_a_mutable_reference() {
    let later = refusal(args(), quote!(impl Ledger { pub fn add(&mut self, a: u32, ctx: &mut Context) {} }));
    assert!(later.contains("comes right after `self`"), "{later}");
    let shared = refusal(args(), quote!(impl Ledger { pub fn add(&mut self, ctx: &Context) {} }));
    assert!(shared.contains("`ctx: &mut Context`"), "{shared}");
}

#[test]
fn reserved_names_are_refused() {
    for name in ["init", "handle", "call", "snapshot"] {
        let ident = syn::Ident::new(name, proc_macro2::Span::call_site());
        let message = refusal(args(), quote!(impl Ledger { pub fn #ident(&self) {} }));
        assert!(message.starts_with(&format!("`{name}` is reserved")), "{message}");
    }
}

#[test]
fn receivers_other_than_references_and_pub_fns_without_self_are_refused() {
    let by_value = refusal(args(), quote!(impl Ledger { pub fn close(self) {} }));
    assert!(by_value.contains("takes `self` by value"), "{by_value}");
    let boxed = refusal(args(), quote!(impl Ledger { pub fn close(self: Box<Self>) {} }));
    assert!(boxed.contains("takes `self` by value or by a typed receiver"), "{boxed}");
    let free = refusal(args(), quote!(impl Ledger { pub fn make() -> Self { Ledger } }));
    assert!(free.contains("make it private (`fn make`)"), "{free}");
    // Private functions are helpers, whatever they take.
    accepted(args(), quote!(impl Ledger { fn make() -> Self { Ledger } fn close(self) {} }));
}

#[test]
fn async_unsafe_and_generic_methods_are_refused() {
    let message = refusal(args(), quote!(impl Ledger { pub async fn wait(&self) {} }));
    assert!(message.contains("`wait` is async"), "{message}");
    let message = refusal(args(), quote!(impl Ledger { pub unsafe fn poke(&self) {} }));
    assert!(message.contains("cannot be `unsafe`"), "{message}");
    let message = refusal(args(), quote!(impl Ledger { pub fn any<T>(&self, t: T) {} }));
    assert!(message.contains("`any` is generic"), "{message}");
    accepted(args(), quote!(impl Ledger { pub fn name<'a>(&'a self) -> &'a str { "" } }));
}

#[test]
fn trait_impls_and_generic_state_types_are_refused() {
    let message = refusal(args(), quote!(impl Default for Ledger {}));
    assert!(message.contains("not on a trait impl"), "{message}");
    let message = refusal(
        args(),
        quote!(
            impl<T> Ledger<T> {}
        ),
    );
    assert!(message.contains("cannot be generic"), "{message}");
}

#[test]
fn migrate_has_one_shape() {
    let message = refusal(args(), quote!(impl Ledger { fn migrate(&self, previous: Previous<'_>) {} }));
    assert!(message.contains("takes no `self`"), "{message}");
    let message = refusal(args(), quote!(impl Ledger { fn migrate() {} }));
    assert!(message.contains("takes one argument"), "{message}");
    let message = refusal(args(), quote!(impl Ledger { async fn migrate(previous: Previous<'_>) {} }));
    assert!(message.contains("cannot be async"), "{message}");
}

#[test]
fn every_fault_of_a_block_is_reported_at_once() {
    let message = refusal(
        quote!(name = "ledger", version = "1"),
        quote!(impl Ledger { pub fn a(self) {} pub fn init(&self) {} }),
    );
    let lines: Vec<&str> = message.lines().collect();
    assert_eq!(lines.len(), 3, "{message}");
}

#[test]
fn methods_are_declared_with_their_mutability_and_raw_names_unraw() {
    let generated = accepted(
        args(),
        quote!(impl Ledger {
            pub fn deposit(&mut self, amount: i64) -> i64 { 0 }
            pub fn balance(&self) -> i64 { 0 }
            pub fn r#type(&self) {}
            fn helper(&self) {}
        }),
    );
    assert!(generated.contains(r#"Method :: new ("deposit")"#), "{generated}");
    assert!(generated.contains(r#"Method :: read_only ("balance")"#), "{generated}");
    assert!(generated.contains(r#"Method :: read_only ("type")"#), "{generated}");
    assert!(!generated.contains("\"helper\""), "{generated}");
}

#[test]
fn without_migrate_another_layout_is_refused_by_a_message_and_with_it_migrate_runs() {
    let without = accepted(args(), quote!(impl Ledger {}));
    assert!(without.contains("no_migrate"), "{without}");
    let with = accepted(
        args(),
        quote!(impl Ledger { fn migrate(previous: Previous<'_>) -> Result<Self, ModuleError> { todo!() } }),
    );
    assert!(with.contains("Self :: migrate"), "{with}");
    assert!(!with.contains("no_migrate"), "{with}");
}
