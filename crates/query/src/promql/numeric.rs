//! Prometheus' float arithmetic, shared by functions and aggregations:
//! Kahan–Neumaier compensated sums, the mean and variance built on them,
//! least-squares regression, rank quantiles and Go's `math.Min`/`math.Max`
//! (whose NaN and signed-zero rules differ from Rust's).

/// Go's `math.Max`: NaN wins unless the other side is +Inf.
pub fn go_max(a: f64, b: f64) -> f64 {
    if a == f64::INFINITY || b == f64::INFINITY {
        f64::INFINITY
    } else if a.is_nan() || b.is_nan() {
        f64::NAN
    } else if a == 0.0 && b == 0.0 {
        if a.is_sign_negative() {
            b
        } else {
            a
        }
    } else if a > b {
        a
    } else {
        b
    }
}

/// Go's `math.Min`: NaN wins unless the other side is -Inf.
pub fn go_min(a: f64, b: f64) -> f64 {
    if a == f64::NEG_INFINITY || b == f64::NEG_INFINITY {
        f64::NEG_INFINITY
    } else if a.is_nan() || b.is_nan() {
        f64::NAN
    } else if a == 0.0 && b == 0.0 {
        if a.is_sign_negative() {
            a
        } else {
            b
        }
    } else if a < b {
        a
    } else {
        b
    }
}

/// Kahan–Neumaier summation step, as Prometheus does it.
pub fn kahan_inc(inc: f64, sum: f64, c: f64) -> (f64, f64) {
    let t = sum + inc;
    let c = if t.is_infinite() {
        0.0
    } else if sum.abs() >= inc.abs() {
        c + ((sum - t) + inc)
    } else {
        c + ((inc - t) + sum)
    };
    (t, c)
}

pub fn kahan_sum(v: &[f64]) -> f64 {
    let (mut sum, mut c) = (0.0, 0.0);
    for &x in v {
        (sum, c) = kahan_inc(x, sum, c);
    }
    if sum.is_infinite() {
        sum
    } else {
        sum + c
    }
}

/// Mean with a compensated sum, switching to an incremental mean when the
/// sum overflows.
pub fn avg(v: &[f64]) -> f64 {
    // The same compensated sum as below without its overflow checks: a sum
    // that ends finite never overflowed on the way (an infinity stays
    // infinite or becomes NaN), so only the rare rest takes the slow path.
    // `avg_over_time` over a day spends most of its time here.
    let (mut sum, mut c) = (0.0f64, 0.0f64);
    for &x in v {
        let t = sum + x;
        c += if sum.abs() >= x.abs() {
            (sum - t) + x
        } else {
            (x - t) + sum
        };
        sum = t;
    }
    if sum.is_finite() && c.is_finite() {
        return (sum + c) / v.len() as f64;
    }
    avg_with_overflow(v)
}

fn avg_with_overflow(v: &[f64]) -> f64 {
    let (mut sum, mut c, mut mean) = (0.0f64, 0.0f64, 0.0f64);
    let mut count = 0.0;
    let mut incremental = false;
    for &x in v {
        count += 1.0;
        if !incremental {
            let (ns, nc) = kahan_inc(x, sum, c);
            if !ns.is_infinite() && !nc.is_infinite() {
                sum = ns;
                c = nc;
                continue;
            }
            incremental = true;
            mean = sum / (count - 1.0);
            c /= count - 1.0;
        }
        let q = (count - 1.0) / count;
        (mean, c) = kahan_inc(x / count, q * mean, q * c);
    }
    if incremental {
        mean + c
    } else {
        (sum + c) / count
    }
}

/// Population variance (Welford, compensated).
pub fn variance(v: &[f64]) -> f64 {
    let (mut count, mut mean, mut c_mean, mut aux, mut c_aux) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for &x in v {
        count += 1.0;
        let delta = x - (mean + c_mean);
        (mean, c_mean) = kahan_inc(delta / count, mean, c_mean);
        (aux, c_aux) = kahan_inc(delta * (x - (mean + c_mean)), aux, c_aux);
    }
    (aux + c_aux) / count
}

/// Least-squares line through the samples with times relative to
/// `intercept_time` (seconds): (slope, value at intercept_time).
pub fn linear_regression(ts: &[i64], vs: &[f64], intercept_time: i64) -> (f64, f64) {
    let (mut n, mut sx, mut cx, mut sy, mut cy, mut sxy, mut cxy, mut sx2, mut cx2) =
        (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    let init_y = vs[0];
    let mut const_y = true;
    for (i, (&t, &v)) in ts.iter().zip(vs).enumerate() {
        if const_y && i > 0 && v != init_y {
            const_y = false;
        }
        n += 1.0;
        let x = (t - intercept_time) as f64 / 1e3;
        (sx, cx) = kahan_inc(x, sx, cx);
        (sy, cy) = kahan_inc(v, sy, cy);
        (sxy, cxy) = kahan_inc(x * v, sxy, cxy);
        (sx2, cx2) = kahan_inc(x * x, sx2, cx2);
    }
    if const_y {
        if init_y.is_infinite() {
            return (f64::NAN, f64::NAN);
        }
        return (0.0, init_y);
    }
    let (sx, sy, sxy, sx2) = (sx + cx, sy + cy, sxy + cxy, sx2 + cx2);
    let cov = sxy - sx * sy / n;
    let var = sx2 - sx * sx / n;
    let slope = cov / var;
    let intercept = sy / n - slope * sx / n;
    (slope, intercept)
}

/// The φ-quantile by linear interpolation between the closest ranks; NaN
/// values sort first like in Prometheus.
pub fn quantile(q: f64, mut v: Vec<f64>) -> f64 {
    if v.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    v.sort_by(|a, b| match (a.is_nan(), b.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Less,
        (false, true) => std::cmp::Ordering::Greater,
        _ => a.total_cmp(b),
    });
    let n = v.len() as f64;
    let rank = q * (n - 1.0);
    let lower = rank.floor().max(0.0);
    let upper = (lower + 1.0).min(n - 1.0);
    let weight = rank - rank.floor();
    v[lower as usize] * (1.0 - weight) + v[upper as usize] * weight
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_between_ranks() {
        assert_eq!(quantile(0.5, vec![1.0, 3.0, 2.0]), 2.0);
        assert_eq!(quantile(0.25, vec![1.0, 2.0, 3.0, 4.0, 5.0]), 2.0);
    }

    #[test]
    fn avg_takes_the_checked_path_exactly_when_needed() {
        let cases: [&[f64]; 7] = [
            &[21.53, 21.55, 21.5, 21.61, 0.1, 0.2, 0.3],
            &[1e308, 1e308, -1e308],
            &[f64::MAX, f64::MAX],
            &[1.0, f64::NAN, 2.0],
            &[f64::INFINITY, 1.0],
            &[f64::INFINITY, f64::NEG_INFINITY],
            &[1e16, 1.0, -1e16, 3.0],
        ];
        for v in cases {
            let (fast, checked) = (avg(v), avg_with_overflow(v));
            assert!(
                fast.to_bits() == checked.to_bits() || (fast.is_nan() && checked.is_nan()),
                "{v:?}: {fast} vs {checked}"
            );
        }
        // An overflowing sum still has a finite mean.
        assert_eq!(avg(&[f64::MAX, f64::MAX]), f64::MAX);
    }

    #[test]
    fn go_min_max() {
        assert!(go_max(1.0, f64::NAN).is_nan());
        assert_eq!(go_max(f64::INFINITY, f64::NAN), f64::INFINITY);
        assert_eq!(go_min(2.0, 3.0), 2.0);
    }
}
