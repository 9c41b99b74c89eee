"""``samples.blackfriday``: synthetic purchases with the schema of Kaggle's Black Friday train.csv.

The default 550,068 rows hold about 5,891 users and 3,631 products, as the Kaggle file does; the
user count scales with the rows (one user per 93.4 rows). Rows per user are heavy-tailed (a
median around 55, a few users with ~1,000), so summing ``Purchase`` per user and labelling the
top decile gives a meaningful "VIP" target.

Streaming with bounded memory: every row draws a user rank and a product rank from fixed
popularity curves, and each user's and product's attributes are a hash of (seed, rank), so no
per-user or per-product array is ever held, whatever the row count.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from mlengine.data.samples._base import (
    BLOCK_ROWS,
    Categorical,
    SampleDataset,
    SkewedRanks,
    block_rng,
    coprime_multiplier,
    hashed_int,
    hashed_uniforms,
    ints,
    key,
    normal_quantile,
    strings,
)

NAME = "blackfriday"

SCHEMA = pa.schema(
    [
        pa.field("User_ID", pa.int64(), nullable=False),
        pa.field("Product_ID", pa.string(), nullable=False),
        pa.field("Gender", pa.string(), nullable=False),
        pa.field("Age", pa.string(), nullable=False),
        pa.field("Occupation", pa.int64(), nullable=False),
        pa.field("City_Category", pa.string(), nullable=False),
        pa.field("Stay_In_Current_City_Years", pa.string(), nullable=False),
        pa.field("Marital_Status", pa.int64(), nullable=False),
        pa.field("Product_Category_1", pa.int64(), nullable=False),
        pa.field("Product_Category_2", pa.int64()),
        pa.field("Product_Category_3", pa.int64()),
        pa.field("Purchase", pa.int64(), nullable=False),
    ]
)

DEFAULT_ROWS = 550_068
USERS_AT_DEFAULT = 5_891
PRODUCTS = 3_631
FIRST_USER_ID = 1_000_001
MIN_PURCHASE, MAX_PURCHASE = 12, 23_961

_GENDERS = pa.array(["F", "M"])
_AGES = pa.array(["0-17", "18-25", "26-35", "36-45", "46-50", "51-55", "55+"])
_AGE = Categorical([3.7, 18.1, 34.8, 19.8, 9.0, 8.2, 6.3])  # share of users (Kaggle)
_MARRIED_BY_AGE = np.array([0.0, 0.22, 0.39, 0.40, 0.72, 0.70, 0.61])
_OCCUPATION = Categorical(
    [12.7, 8.6, 4.8, 3.2, 13.1, 2.2, 3.7, 10.8, 0.3, 1.1, 2.4,
     2.1, 5.7, 1.4, 5.0, 2.2, 4.6, 7.3, 1.2, 1.5, 6.1]
)  # fmt: skip
_STUDENT_OCCUPATION = 10
_CITIES = pa.array(["A", "B", "C"])
_STAYS = pa.array(["0", "1", "2", "3", "4+"])
_STAY = Categorical([13.5, 35.2, 18.5, 17.3, 15.4])
_PRODUCT_IDS = pa.array([f"P00{code:04d}42" for code in range(10_000)])

# Product_Category_1: share of rows and mean Purchase of each category (Kaggle train.csv).
_CATEGORY_SHARE = [
    25.5, 4.3, 3.7, 2.1, 27.4, 3.7, 0.7, 20.7, 0.07, 0.9,
    4.4, 0.7, 1.0, 0.28, 1.1, 1.8, 0.1, 0.6, 0.29, 0.46,
]  # fmt: skip
_CATEGORY_PRICE = np.array(
    [0.0, 13600, 11250, 10100, 2330, 6240, 15840, 16370, 7500, 15540, 19680,
     4690, 1350, 720, 13140, 14780, 14770, 10170, 2970, 37, 370]
)  # fmt: skip
_CATEGORY = Categorical(_CATEGORY_SHARE)

# Expected rows per user and per product over their popularity quantile: log-normal, clipped to
# the range the Kaggle file shows (6 to ~1,000 rows per user at the default size).
_USER_RANKS = SkewedRanks(lambda q: np.clip(54.0 * np.exp(normal_quantile(q)), 6.0, 1026.0))
_PRODUCT_RANKS = SkewedRanks(lambda q: np.clip(np.exp(1.6 * normal_quantile(q)), 0.02, 45.0))


def user_count(rows: int) -> int:
    """Users in a table of ``rows`` rows: 5,891 at the Kaggle size, in proportion otherwise."""
    return max(1, round(rows * USERS_AT_DEFAULT / DEFAULT_ROWS))


def generate_block(seed: int, total_rows: int, index: int) -> pa.RecordBatch:
    """Block ``index`` of the Black Friday sample (see the module docstring)."""
    rng = block_rng(seed, NAME, index)
    n = BLOCK_ROWS
    users = user_count(total_rows)

    # Which user: popular ranks get more rows; rank -> User_ID is a seeded permutation, so the
    # heavy buyers are spread over the id range.
    user_rank = _USER_RANKS.draw(rng.random(n), users)
    user_key = key(seed, NAME, "users")
    spread = coprime_multiplier(user_key, users)
    offset = hashed_int(key(seed, NAME, "user ids"), users)
    user_id = FIRST_USER_ID + (user_rank * spread + offset) % users
    u_gender, u_age, u_occupation, u_student, u_city, u_stay, u_married = hashed_uniforms(
        user_rank, user_key, 7
    )
    male = u_gender < 0.717
    age = _AGE.draw(u_age)
    occupation = np.where(
        (age == 0) & (u_student < 0.7), _STUDENT_OCCUPATION, _OCCUPATION.draw(u_occupation)
    )
    # Busy shoppers live in the big cities more often: C holds ~53% of users, ~31% of rows.
    activity = user_rank / users
    city = np.where(u_city < 0.75 - 0.5 * activity, 2, np.where(u_city > 0.88 - 0.2 * activity,
                                                                   0, 1))  # fmt: skip
    stay = _STAY.draw(u_stay)
    married = u_married < _MARRIED_BY_AGE[age]

    # Which product: its id, categories and list price come from a hash of its rank.
    product_rank = _PRODUCT_RANKS.draw(rng.random(n), PRODUCTS)
    product_key = key(seed, NAME, "product ids")
    code = (product_rank * coprime_multiplier(product_key, 10_000) + hashed_int(product_key, 10_000)
            ) % 10_000  # fmt: skip
    p_category, p_second, p_second_value, p_third, p_third_value, p_price = hashed_uniforms(
        product_rank, key(seed, NAME, "products"), 6
    )
    category_1 = _CATEGORY.draw(p_category) + 1
    category_2 = category_1 + 1 + (p_second_value * (18 - category_1)).astype(np.int64)
    no_second = (p_second < 0.316) | (category_1 >= 18)
    category_3 = category_2 + 1 + (p_third_value * (18 - category_2)).astype(np.int64)
    no_third = no_second | (p_third < 0.5) | (category_2 >= 18)
    list_price = 1.11 * _CATEGORY_PRICE[category_1] * np.exp(0.35 * (p_price - 0.5))

    # What was paid: mostly near the list price, one sale in five at a deep discount; men and
    # city-C shoppers spend a little more per item.
    discounted = rng.random(n) < 0.2
    paid = np.where(discounted, rng.uniform(0.25, 0.6, n), 1.0 + 0.13 * rng.standard_normal(n))
    paid *= np.where(male, 1.03, 0.95) * np.where(city == 2, 1.04, 1.0)
    purchase = np.clip(np.rint(list_price * paid), MIN_PURCHASE, MAX_PURCHASE)

    columns = [
        ints(user_id),
        strings(code, _PRODUCT_IDS),
        strings(male.astype(np.int64), _GENDERS),
        strings(age, _AGES),
        ints(occupation),
        strings(city, _CITIES),
        strings(stay, _STAYS),
        ints(married),
        ints(category_1),
        ints(category_2, mask=no_second),
        ints(category_3, mask=no_third),
        ints(purchase),
    ]
    return pa.RecordBatch.from_arrays(columns, schema=SCHEMA)


DATASET = SampleDataset(
    name=NAME,
    description="Synthetic retail purchases with the schema of Kaggle's Black Friday train.csv",
    default_rows=DEFAULT_ROWS,
    schema=SCHEMA,
    generate_block=generate_block,
)
