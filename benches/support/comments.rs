//! The comments of the themed loads (`probe load`'s themed comments and
//! `benches/themes.rs`): lengths and themes as survey tools see them
//! (none, one, several), in Spanish and English.

pub const COMMENTS: [&str; 16] = [
    "Nadie me devolvió la llamada después de tres reclamos",
    "La aplicación se cae cada vez que intento transferir",
    "Me cobraron una comisión que nadie me explicó",
    "Excelente atención en la sucursal, muy amables",
    "Esperé más de una hora en la línea",
    "Todo bien",
    "El trámite del préstamo fue larguísimo y complicado",
    "The app is slow and the support agent was rude",
    "Great service, quick and friendly",
    "Cobro duplicado en mi tarjeta, todavía sin reembolso",
    "Buen producto pero el precio es caro",
    "No conocían el producto y me dieron información confusa",
    "Sospecho de un cargo que no reconozco",
    "Gracias",
    "My package arrived late and damaged",
    "Resolvieron mi problema en la primera llamada",
];
