//! Reads the `impl` block: which functions are methods, what each takes and
//! returns, and whether there is a `migrate`. Every shape the typed layer
//! cannot call is refused here, with the span of what is wrong.

use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{
    FnArg, GenericParam, ImplItem, ImplItemFn, ItemImpl, ReceiverKind, ReturnType, Safety, Type, Visibility,
};

use crate::hooks::{HookDef, HookKind, read_hook};

/// Names the generated `Module` impl uses: a method with one of them would
/// be shadowed by, or shadow, the trait's own function.
pub const RESERVED: &[&str] = &["init", "handle", "call", "snapshot"];

/// A `pub fn` of the impl block, callable by its name.
pub struct MethodDef {
    /// The function's identifier, as written (`r#type` stays raw).
    pub ident: syn::Ident,
    /// The method name callers use (`type` for `r#type`).
    pub name: String,
    /// It takes `&self`, so it never changes the state.
    pub read_only: bool,
    /// It takes `ctx: &mut Context` after `self`.
    pub takes_context: bool,
    /// The type of its one argument, decoded from the payload.
    pub argument: Option<Type>,
    pub output: Output,
}

/// What a method returns.
pub enum Output {
    /// Nothing: the reply is JSON `null`.
    Unit,
    /// A value encoded as JSON.
    Value(Type),
    /// A `Result`: `Ok` is encoded as JSON, `Err` is a refusal with its message.
    Result(Type),
}

/// The `migrate` function of the impl block.
pub struct MigrateDef {
    pub ident: syn::Ident,
}

/// The impl block's methods, session hooks and `migrate`.
pub struct ImplDef {
    pub methods: Vec<MethodDef>,
    pub hooks: Vec<HookDef>,
    pub migrate: Option<MigrateDef>,
}

impl ImplDef {
    pub fn read(block: &ItemImpl) -> syn::Result<ImplDef> {
        if let Some((path, _)) = &block.trait_ {
            return Err(syn::Error::new(
                path.span(),
                "#[module] goes on the state type's own impl block (`impl Ledger { .. }`), not on a trait impl",
            ));
        }
        if !block.generics.params.is_empty() {
            return Err(syn::Error::new(
                block.generics.span(),
                "a #[module] state type cannot be generic: the host loads one concrete module per library",
            ));
        }
        let mut errors: Option<syn::Error> = None;
        let mut methods = Vec::new();
        let mut hooks = Vec::new();
        let mut migrate = None;
        for item in &block.items {
            let ImplItem::Fn(function) = item else { continue };
            // A hook whatever its visibility: it is never a method.
            let hook = HookKind::of(&function.sig.ident.unraw().to_string());
            let outcome = if let Some(kind) = hook {
                read_hook(kind, function).map(|def| hooks.push(def))
            } else if function.sig.ident == "migrate" {
                read_migrate(function).map(|def| migrate = Some(def))
            } else if matches!(function.vis, Visibility::Public(_)) {
                read_method(function).map(|def| methods.push(def))
            } else {
                // Private and `pub(crate)` functions are the module's own helpers.
                Ok(())
            };
            if let Err(error) = outcome {
                match &mut errors {
                    Some(all) => all.combine(error),
                    None => errors = Some(error),
                }
            }
        }
        match errors {
            Some(errors) => Err(errors),
            None => Ok(ImplDef { methods, hooks, migrate }),
        }
    }
}

const MIGRATE_SIGNATURE: &str = "fn migrate(previous: Previous<'_>) -> Result<Self, ModuleError>";

fn read_migrate(function: &ImplItemFn) -> syn::Result<MigrateDef> {
    let sig = &function.sig;
    if let Some(asyncness) = sig.asyncness {
        return Err(syn::Error::new(
            asyncness.span(),
            format!("`migrate` cannot be async; write `{MIGRATE_SIGNATURE}`"),
        ));
    }
    if let Some(receiver) = sig.receiver() {
        return Err(syn::Error::new(
            receiver.span(),
            format!(
                "`migrate` builds the state from the previous version's snapshot, so it takes no `self`; \
                 write `{MIGRATE_SIGNATURE}`"
            ),
        ));
    }
    if sig.inputs.len() != 1 {
        return Err(syn::Error::new(
            sig.inputs.span(),
            format!("`migrate` takes one argument, the previous version; write `{MIGRATE_SIGNATURE}`"),
        ));
    }
    Ok(MigrateDef { ident: sig.ident.clone() })
}

fn read_method(function: &ImplItemFn) -> syn::Result<MethodDef> {
    let sig = &function.sig;
    let ident = sig.ident.clone();
    let name = ident.unraw().to_string();
    if RESERVED.contains(&name.as_str()) {
        return Err(syn::Error::new(
            ident.span(),
            format!(
                "`{name}` is reserved: the `Module` trait the macro implements has a function of that name; \
                 rename the method (the reserved names are {})",
                RESERVED.join(", ")
            ),
        ));
    }
    if let Some(asyncness) = sig.asyncness {
        return Err(syn::Error::new(
            asyncness.span(),
            format!(
                "`{name}` is async, but a module's methods run to completion on the host's thread \
                 (a module owns no runtime); make it a plain `fn` and ask the host for later work with `ctx.after`"
            ),
        ));
    }
    if let Safety::Unsafe(unsafety) = &sig.safety {
        return Err(syn::Error::new(
            unsafety.span(),
            format!("`{name}` is a method callers reach by name, so it cannot be `unsafe`"),
        ));
    }
    if let Some(param) = sig.generics.params.iter().find(|param| !matches!(param, GenericParam::Lifetime(_)))
    {
        return Err(syn::Error::new(
            param.span(),
            format!(
                "`{name}` is generic, but a method callers reach by name has one argument type and one reply type"
            ),
        ));
    }
    let read_only = match sig.receiver().map(|receiver| &receiver.kind) {
        Some(ReceiverKind::Reference(_, _, mutability)) => mutability.is_none(),
        Some(_) => {
            return Err(syn::Error::new(
                sig.inputs.span(),
                format!(
                    "`{name}` takes `self` by value or by a typed receiver; a method takes `&self` (reads the state) \
                     or `&mut self` (changes it)"
                ),
            ));
        }
        None => {
            return Err(syn::Error::new(
                ident.span(),
                format!(
                    "`{name}` is a `pub fn` without `self`: every `pub fn` of a #[module] impl is a method, \
                     taking `&self` or `&mut self`; make it private (`fn {name}`) if it is a helper"
                ),
            ));
        }
    };

    let mut takes_context = false;
    let mut argument: Option<Type> = None;
    for (position, input) in sig.inputs.iter().enumerate().skip(1) {
        let FnArg::Typed(typed) = input else { continue };
        match context_reference(&typed.ty) {
            Some(true) if position == 1 => takes_context = true,
            Some(true) => {
                return Err(syn::Error::new(
                    typed.span(),
                    format!("`{name}` takes the context later: `ctx: &mut Context` comes right after `self`"),
                ));
            }
            Some(false) => {
                return Err(syn::Error::new(
                    typed.ty.span(),
                    format!("`{name}` takes the context as `ctx: &mut Context`"),
                ));
            }
            None if argument.is_some() => {
                return Err(syn::Error::new(
                    typed.span(),
                    format!(
                        "`{name}` takes two arguments, but a method takes at most one (after an optional \
                         `ctx: &mut Context`), decoded from the payload as JSON: put them in one struct \
                         with #[derive(Deserialize)]"
                    ),
                ));
            }
            None => argument = Some((*typed.ty).clone()),
        }
    }

    let output = match &sig.output {
        ReturnType::Default => Output::Unit,
        ReturnType::Type(_, ty) if is_result(ty) => Output::Result((**ty).clone()),
        ReturnType::Type(_, ty) => Output::Value((**ty).clone()),
    };
    Ok(MethodDef { ident, name, read_only, takes_context, argument, output })
}

/// `Some(true)` for `&mut Context`, `Some(false)` for another use of a type
/// named `Context` (by value or `&Context`), `None` for anything else.
pub fn context_reference(ty: &Type) -> Option<bool> {
    match ty {
        Type::Reference(reference) if is_named(&reference.elem, "Context") => {
            Some(reference.mutability.is_some())
        }
        other if is_named(other, "Context") => Some(false),
        _ => None,
    }
}

/// Whether `ty` is a path whose last segment is `name` (`Context`,
/// `hotswap_module::Context`).
pub fn is_named(ty: &Type, name: &str) -> bool {
    match ty {
        Type::Path(path) if path.qself.is_none() => {
            path.path.segments.last().is_some_and(|last| last.ident == name)
        }
        Type::Paren(inner) => is_named(&inner.elem, name),
        Type::Group(inner) => is_named(&inner.elem, name),
        _ => false,
    }
}

/// A return type whose last path segment is `Result` is a `Result`
/// (`Result<T, E>`, `std::io::Result<T>`): the macro only sees tokens, so it
/// goes by the name; a type of one's own named `Result` fails to compile at
/// the method's return type.
pub fn is_result(ty: &Type) -> bool {
    is_named(ty, "Result")
}
