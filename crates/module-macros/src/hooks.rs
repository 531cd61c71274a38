//! The session hooks of a `#[module]` impl block: functions named `on_join`,
//! `on_message`, `on_leave` and `on_tick` are read here, not as methods,
//! and become the `Module` trait's hooks of the same names.
//!
//! Their shapes, `ctx` optional in each:
//!
//! ```text
//! fn on_join(&mut self, ctx: &mut Context, session: Session, request: R)  // R optional
//! fn on_message(&mut self, ctx: &mut Context, session: Session, message: M)
//! fn on_leave(&mut self, ctx: &mut Context, session: Session)
//! fn on_tick(&mut self, ctx: &mut Context)
//! ```
//!
//! `R` and `M` are `&[u8]` (the bytes as they came), `&str` (checked UTF-8)
//! or any `DeserializeOwned` type: the join request is a query string
//! (`name=ann&team=red`), a message is JSON. Each returns nothing or a
//! `Result<(), E: Display>`.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{FnArg, GenericParam, ImplItemFn, ReceiverKind, ReturnType, Safety, Type};

use crate::methods::{context_reference, is_named, is_result};

/// Which hook a function is: the reserved names.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum HookKind {
    Join,
    Message,
    Leave,
    Tick,
}

impl HookKind {
    pub fn of(name: &str) -> Option<HookKind> {
        match name {
            "on_join" => Some(HookKind::Join),
            "on_message" => Some(HookKind::Message),
            "on_leave" => Some(HookKind::Leave),
            "on_tick" => Some(HookKind::Tick),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            HookKind::Join => "on_join",
            HookKind::Message => "on_message",
            HookKind::Leave => "on_leave",
            HookKind::Tick => "on_tick",
        }
    }

    /// The whole shape, for error messages.
    fn signature(self) -> &'static str {
        match self {
            HookKind::Join => {
                "fn on_join(&mut self, ctx: &mut Context, session: Session, request: R) \
                 (`ctx` and `request` optional; R is &[u8], &str or a Deserialize type read from the query string)"
            }
            HookKind::Message => {
                "fn on_message(&mut self, ctx: &mut Context, session: Session, message: M) \
                 (`ctx` optional; M is &[u8], &str or a Deserialize type decoded from JSON)"
            }
            HookKind::Leave => "fn on_leave(&mut self, ctx: &mut Context, session: Session) (`ctx` optional)",
            HookKind::Tick => "fn on_tick(&mut self, ctx: &mut Context) (`ctx` optional)",
        }
    }

    /// Whether it takes the session after `self` and `ctx`.
    fn takes_session(self) -> bool {
        self != HookKind::Tick
    }

    /// Whether it takes the bytes (request or message) after the session,
    /// and whether they are required.
    fn bytes(self) -> Option<(&'static str, bool)> {
        match self {
            HookKind::Join => Some(("request", false)),
            HookKind::Message => Some(("message", true)),
            HookKind::Leave | HookKind::Tick => None,
        }
    }
}

/// How a hook takes the join request or the message.
pub enum Bytes {
    /// `&[u8]`: as they came.
    Raw,
    /// `&str`: checked UTF-8.
    Text,
    /// Any other type: decoded (the query string for a join, JSON for a message).
    Decoded(Box<Type>),
}

/// A hook of the impl block.
pub struct HookDef {
    pub kind: HookKind,
    /// The function's identifier, as written.
    pub ident: syn::Ident,
    pub takes_context: bool,
    /// `None` when it does not take them (only `on_join` may leave them out).
    pub bytes: Option<Bytes>,
    /// The `Result` type it returns, or `None` for nothing.
    pub result: Option<Type>,
}

/// Reads a function with a hook's reserved name; refuses any other shape.
pub fn read_hook(kind: HookKind, function: &ImplItemFn) -> syn::Result<HookDef> {
    let sig = &function.sig;
    let name = kind.name();
    let wrong = |span: proc_macro2::Span, what: String| {
        syn::Error::new(span, format!("{what}; `{name}` is a session hook: write `{}`", kind.signature()))
    };
    if let Some(asyncness) = sig.asyncness {
        return Err(wrong(
            asyncness.span(),
            format!("`{name}` cannot be async (it runs to completion on the host's thread)"),
        ));
    }
    if let Safety::Unsafe(unsafety) = &sig.safety {
        return Err(wrong(unsafety.span(), format!("`{name}` cannot be `unsafe`")));
    }
    if let Some(param) = sig.generics.params.iter().find(|param| !matches!(param, GenericParam::Lifetime(_)))
    {
        return Err(wrong(param.span(), format!("`{name}` cannot be generic")));
    }
    match sig.receiver().map(|receiver| &receiver.kind) {
        Some(ReceiverKind::Reference(..)) => {}
        Some(_) => return Err(wrong(sig.inputs.span(), format!("`{name}` takes `&mut self` or `&self`"))),
        None => return Err(wrong(sig.ident.span(), format!("`{name}` takes `&mut self` (or `&self`)"))),
    }

    let mut inputs = sig.inputs.iter().skip(1).filter_map(|input| match input {
        FnArg::Typed(typed) => Some(typed),
        FnArg::Receiver(_) => None,
    });
    let mut next = inputs.next();
    let mut takes_context = false;
    if let Some(typed) = next {
        match context_reference(&typed.ty) {
            Some(true) => {
                takes_context = true;
                next = inputs.next();
            }
            Some(false) => {
                return Err(wrong(
                    typed.ty.span(),
                    format!("`{name}` takes the context as `ctx: &mut Context`"),
                ));
            }
            None => {}
        }
    }
    if kind.takes_session() {
        match next {
            Some(typed) if is_named(&typed.ty, "Session") => next = inputs.next(),
            Some(typed) => {
                return Err(wrong(
                    typed.ty.span(),
                    format!("`{name}` takes the session here, as `session: Session`"),
                ));
            }
            None => {
                return Err(wrong(
                    sig.inputs.span(),
                    format!("`{name}` takes the session, as `session: Session`"),
                ));
            }
        }
    }
    let bytes = match (kind.bytes(), next) {
        (Some(_), Some(typed)) => {
            if context_reference(&typed.ty).is_some() {
                return Err(wrong(
                    typed.span(),
                    format!("`{name}` takes the context first, right after `self`"),
                ));
            }
            next = inputs.next();
            Some(bytes_of(&typed.ty))
        }
        (Some((what, true)), None) => {
            return Err(wrong(sig.inputs.span(), format!("`{name}` takes the {what} after the session")));
        }
        (Some((_, false)), None) | (None, None) => None,
        (None, Some(_)) => None,
    };
    if let Some(extra) = next {
        let what = match kind.bytes() {
            Some((what, _)) => format!("`{name}` takes nothing after the {what}"),
            None if kind.takes_session() => format!("`{name}` takes nothing after the session"),
            None => format!("`{name}` takes nothing but the context"),
        };
        return Err(wrong(extra.span(), what));
    }

    let result = match &sig.output {
        ReturnType::Default => None,
        ReturnType::Type(_, ty) if is_result(ty) => Some((**ty).clone()),
        ReturnType::Type(_, ty) => {
            return Err(wrong(
                ty.span(),
                format!("`{name}` has no reply to give: it returns nothing, or `Result<(), E>` to refuse"),
            ));
        }
    };
    Ok(HookDef { kind, ident: sig.ident.clone(), takes_context, bytes, result })
}

/// `&[u8]`, `&str` (any lifetime), or a type to decode.
fn bytes_of(ty: &Type) -> Bytes {
    if let Type::Reference(reference) = ty
        && reference.mutability.is_none()
    {
        match &*reference.elem {
            Type::Slice(slice) if is_named(&slice.elem, "u8") => return Bytes::Raw,
            elem if is_named(elem, "str") => return Bytes::Text,
            _ => {}
        }
    }
    Bytes::Decoded(Box::new(ty.clone()))
}

/// The `Module` trait's hooks that the impl block defines; the others keep
/// the trait's defaults (a join accepted, a message ignored, nothing done).
pub fn generate(hooks: &[HookDef]) -> TokenStream {
    hooks.iter().map(generate_hook).collect()
}

fn generate_hook(hook: &HookDef) -> TokenStream {
    let HookDef { kind, ident, takes_context, bytes, result } = hook;
    let name = kind.name();
    let mut args = vec![quote! { self }];
    if *takes_context {
        args.push(quote! { ctx });
    }
    if kind.takes_session() {
        args.push(quote! { session });
    }
    let (what, decoder) = match kind {
        HookKind::Join => ("request", quote! { decode_join_request }),
        _ => ("message", quote! { decode_message }),
    };
    let what_ident = syn::Ident::new(what, proc_macro2::Span::call_site());
    // A type that is not `DeserializeOwned` is reported where it is written.
    let decode = bytes.as_ref().map(|bytes| {
        args.push(quote! { #what_ident });
        match bytes {
            Bytes::Raw => quote! {},
            Bytes::Text => quote! {
                let #what_ident = ::hotswap_module::__private::hook_text(#name, #what, #what_ident)?;
            },
            Bytes::Decoded(ty) => quote! {
                let #what_ident = ::hotswap_module::__private::#decoder::<#ty>(#what_ident)?;
            },
        }
    });
    let run = quote! { Self::#ident(#(#args),*) };
    // An `Err` that is not `Display`, or an `Ok` that is not `()`, is
    // reported at the return type.
    let outcome = match (kind, result) {
        (HookKind::Leave, Some(ty)) => quote_spanned! {ty.span()=>
            let result = #run;
            ::hotswap_module::__private::leave_result(ctx, result);
        },
        (HookKind::Leave, None) => quote! { #run; },
        (_, Some(ty)) => quote_spanned! {ty.span()=>
            ::hotswap_module::__private::hook_result(#run)
        },
        (_, None) => quote! {
            #run;
            ::core::result::Result::Ok(())
        },
    };
    // Not every hook uses all of its arguments.
    let ctx_ty = quote! { &mut ::hotswap_module::Context };
    let session_ty = quote! { ::hotswap_module::Session };
    match kind {
        HookKind::Join | HookKind::Message => {
            let trait_fn = syn::Ident::new(name, proc_macro2::Span::call_site());
            quote! {
                fn #trait_fn(
                    &mut self,
                    ctx: #ctx_ty,
                    session: #session_ty,
                    #what_ident: &[u8],
                ) -> ::core::result::Result<(), ::hotswap_module::ModuleError> {
                    let _ = (&ctx, &#what_ident);
                    #decode
                    #outcome
                }
            }
        }
        HookKind::Leave => quote! {
            fn on_leave(&mut self, ctx: #ctx_ty, session: #session_ty) {
                let _ = &ctx;
                #outcome
            }
        },
        HookKind::Tick => quote! {
            fn on_tick(&mut self, ctx: #ctx_ty) -> ::core::result::Result<(), ::hotswap_module::ModuleError> {
                let _ = &ctx;
                #outcome
            }
        },
    }
}
