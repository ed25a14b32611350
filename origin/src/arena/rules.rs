//! The arena's rule validators: each refusal is recorded as a violation with
//! its evidence.

use std::collections::BTreeSet;

use skylane_proto::RejectCode;

use crate::world::{Ctx, Rejection};

use super::messages::ArenaAction;
use super::state::{dist, Arena};

pub(super) fn check_ownership(w: &Arena, ctx: &Ctx, a: &ArenaAction) -> Result<(), Rejection> {
    let me = w.me(ctx)?;
    match a {
        ArenaAction::PickUp { item } => match w.items.get(item) {
            None => Err(w.absent(*item, "does not exist")),
            Some(i) if i.holder.is_some() => Err(Rejection::new(
                RejectCode::NotOwner,
                format!("{item} is already held"),
            )),
            Some(_) => Ok(()),
        },
        ArenaAction::Trade {
            partner,
            give_items,
            get_items,
            ..
        } => {
            if *partner == ctx.avatar {
                return Err(Rejection::new(
                    RejectCode::NotOwner,
                    "cannot trade with yourself",
                ));
            }
            let other = w.players.get(partner);
            // A gift to a player in another zone goes there (the engine
            // answers the action with what that zone says).
            let elsewhere = other.is_none() && w.zone.is_some() && get_items.is_empty();
            if other.is_none() && !elsewhere {
                return Err(w.absent(*partner, "is not a player"));
            }
            if let Some(i) = give_items.iter().find(|i| !me.items.contains(i)) {
                return Err(Rejection::new(
                    RejectCode::NotOwner,
                    format!("you do not hold {i}"),
                ));
            }
            if let Some(i) = other.and_then(|o| get_items.iter().find(|i| !o.items.contains(i))) {
                return Err(Rejection::new(
                    RejectCode::NotOwner,
                    format!("{partner} does not hold {i}"),
                ));
            }
            let mut seen = BTreeSet::new();
            if give_items.iter().chain(get_items).any(|i| !seen.insert(*i)) {
                return Err(Rejection::new(
                    RejectCode::Malformed,
                    "an item is listed twice",
                ));
            }
            Ok(())
        }
        // The economy's own rule checks offers and their answers.
        ArenaAction::Offer { .. } | ArenaAction::Accept { .. } | ArenaAction::Decline { .. } => {
            Ok(())
        }
        ArenaAction::Move { .. }
        | ArenaAction::Fire { .. }
        | ArenaAction::Spray { .. }
        | ArenaAction::Mark { .. }
        | ArenaAction::Plan { .. } => Ok(()),
    }
}

pub(super) fn check_speed(w: &Arena, ctx: &Ctx, a: &ArenaAction) -> Result<(), Rejection> {
    let (ArenaAction::Move { x, y } | ArenaAction::Mark { x, y } | ArenaAction::Plan { x, y }) = a
    else {
        return Ok(());
    };
    if !x.is_finite()
        || !y.is_finite()
        || *x < 0.0
        || *y < 0.0
        || *x > w.cfg.width
        || *y > w.cfg.height
    {
        return Err(Rejection::new(
            RejectCode::Malformed,
            "position outside the map",
        ));
    }
    if matches!(a, ArenaAction::Mark { .. } | ArenaAction::Plan { .. }) {
        return Ok(());
    }
    let me = w.me(ctx)?;
    let ticks = ctx.tick.saturating_sub(me.last_move_tick);
    let allowed = w.move_budget(me, ctx.tick, ctx.tick_hz);
    let d = dist((me.x, me.y), (*x, *y));
    // 1% slack for float rounding in honest clients.
    if d > allowed * 1.01 + 1e-3 {
        return Err(Rejection::new(
            RejectCode::Speed,
            format!("moved {d:.2} units, {ticks} ticks after the last move (max {allowed:.2})"),
        ));
    }
    Ok(())
}

pub(super) fn check_cooldown(w: &Arena, ctx: &Ctx, a: &ArenaAction) -> Result<(), Rejection> {
    let ArenaAction::Fire { .. } = a else {
        return Ok(());
    };
    let me = w.me(ctx)?;
    match me.last_fire_tick {
        Some(t) if ctx.tick < t + w.cfg.fire_cooldown_ticks => Err(Rejection::new(
            RejectCode::Cooldown,
            format!(
                "fired {} ticks after the last shot (cooldown {})",
                ctx.tick - t,
                w.cfg.fire_cooldown_ticks
            ),
        )),
        _ => Ok(()),
    }
}

pub(super) fn check_range(w: &Arena, ctx: &Ctx, a: &ArenaAction) -> Result<(), Rejection> {
    let me = w.me(ctx)?;
    let (target, limit, what) = match a {
        ArenaAction::Fire { x, y } => ((*x, *y), w.cfg.fire_range, "shot"),
        ArenaAction::PickUp { item } => match w.items.get(item) {
            Some(i) => ((i.x, i.y), w.cfg.pickup_range, "pickup"),
            None => return Ok(()),
        },
        _ => return Ok(()),
    };
    let d = dist((me.x, me.y), target);
    if d.is_nan() || d > limit {
        return Err(Rejection::new(
            RejectCode::Range,
            format!("{what} at {d:.1} units (max {limit})"),
        ));
    }
    Ok(())
}

pub(super) fn check_resources(w: &Arena, ctx: &Ctx, a: &ArenaAction) -> Result<(), Rejection> {
    let ArenaAction::Trade {
        partner,
        give_coins,
        get_coins,
        ..
    } = a
    else {
        return Ok(());
    };
    let me = w.me(ctx)?;
    if me.coins < *give_coins {
        return Err(Rejection::new(
            RejectCode::Resources,
            format!("{} coins < {give_coins}", me.coins),
        ));
    }
    if let Some(other) = w.players.get(partner) {
        if other.coins < *get_coins {
            return Err(Rejection::new(
                RejectCode::Resources,
                format!("{partner} has {} coins < {get_coins}", other.coins),
            ));
        }
    }
    Ok(())
}
