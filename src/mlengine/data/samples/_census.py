"""``samples.census``: synthetic adults with the schema of the UCI Adult (census income) data.

Column names are the ones Google's census tutorial uses (``fnlwgt``, ``education_num``,
``gender``, ``income_bracket``...). Values are the UCI categories without the leading space of the
raw files, ``?`` marks an unknown workclass, occupation or country as in UCI. About 24% of rows
earn ``>50K``; the odds rise with education, age (up to the fifties), hours worked, capital
gains, being married and being male, as in the real data.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from mlengine.data.samples._base import (
    BLOCK_ROWS,
    Categorical,
    ConditionalCategorical,
    SampleDataset,
    block_rng,
    ints,
    strings,
)

NAME = "census"

SCHEMA = pa.schema(
    [
        pa.field("age", pa.int64(), nullable=False),
        pa.field("workclass", pa.string(), nullable=False),
        pa.field("fnlwgt", pa.int64(), nullable=False),
        pa.field("education", pa.string(), nullable=False),
        pa.field("education_num", pa.int64(), nullable=False),
        pa.field("marital_status", pa.string(), nullable=False),
        pa.field("occupation", pa.string(), nullable=False),
        pa.field("relationship", pa.string(), nullable=False),
        pa.field("race", pa.string(), nullable=False),
        pa.field("gender", pa.string(), nullable=False),
        pa.field("capital_gain", pa.int64(), nullable=False),
        pa.field("capital_loss", pa.int64(), nullable=False),
        pa.field("hours_per_week", pa.int64(), nullable=False),
        pa.field("native_country", pa.string(), nullable=False),
        pa.field("income_bracket", pa.string(), nullable=False),
    ]
)

DEFAULT_ROWS = 32_561  # adult.data, the training file the tutorial downloads

# education_num 1..16 and the UCI label of each, with their shares in adult.data.
_EDUCATIONS = pa.array(
    ["Preschool", "1st-4th", "5th-6th", "7th-8th", "9th", "10th", "11th", "12th", "HS-grad",
     "Some-college", "Assoc-voc", "Assoc-acdm", "Bachelors", "Masters", "Prof-school",
     "Doctorate"]
)  # fmt: skip
_EDUCATION = Categorical(
    [0.15, 0.5, 1.0, 2.0, 1.6, 2.9, 3.6, 1.3, 32.3, 22.4, 4.2, 3.3, 16.4, 5.3, 1.8, 1.3]
)
_GENDERS = pa.array(["Female", "Male"])
_RACES = pa.array(["White", "Black", "Asian-Pac-Islander", "Amer-Indian-Eskimo", "Other"])
_RACE = Categorical([85.4, 9.6, 3.2, 1.0, 0.8])
_MARITAL = pa.array(
    ["Married-civ-spouse", "Never-married", "Divorced", "Separated", "Widowed",
     "Married-spouse-absent", "Married-AF-spouse"]
)  # fmt: skip
_RELATIONSHIPS = pa.array(
    ["Husband", "Wife", "Own-child", "Not-in-family", "Unmarried", "Other-relative"]
)
_OCCUPATIONS = pa.array(
    ["Prof-specialty", "Exec-managerial", "Tech-support", "Sales", "Adm-clerical",
     "Craft-repair", "Machine-op-inspct", "Transport-moving", "Handlers-cleaners",
     "Farming-fishing", "Protective-serv", "Other-service", "Priv-house-serv", "Armed-Forces", "?"]
)  # fmt: skip
# Base odds of each occupation, calibrated so that the shares over all rows match adult.data
# (Prof-specialty 12.7%, Craft-repair 12.6%, ...) once education and gender move them.
_OCCUPATION_SHARE = np.array(
    [9.19, 12.23, 2.81, 11.66, 8.28, 17.64, 6.34, 6.39, 4.91, 3.88, 2.58, 8.39, 0.21, 0.04, 5.45]
)
# How each occupation's log-odds move per year of education_num above 10, and for women.
_OCCUPATION_EDUCATION = np.array(
    [0.33, 0.18, 0.09, 0.03, 0.0, -0.12, -0.21, -0.18, -0.21, -0.18, 0.0, -0.15, -0.24, 0.0, -0.06]
)
_OCCUPATION_FEMALE = np.array(
    [0.21, -0.07, 0.14, 0.0, 0.84, -1.54, -0.35, -1.33, -0.84, -1.05, -0.77, 0.42, 1.4, -1.4, 0.21]
)
_UNKNOWN_OCCUPATION = 14
# Occupation odds for each (education_num 1..16, is female) pair: row (education_num - 1) * 2 + f.
_OCCUPATION = ConditionalCategorical(
    np.array(
        [
            _OCCUPATION_SHARE
            * np.exp((education - 10) * _OCCUPATION_EDUCATION + female * _OCCUPATION_FEMALE)
            for education in range(1, 17)
            for female in (0, 1)
        ]
    )
)
# Age 17..90: a gamma shape (mean 38.6 years) like adult.data's.
_AGE_YEARS = np.arange(17, 91)
_AGE = Categorical((_AGE_YEARS - 16.5) ** 1.3 * np.exp(-(_AGE_YEARS - 16.5) / 9.8))
_WORKCLASSES = pa.array(
    ["Private", "Self-emp-not-inc", "Self-emp-inc", "Local-gov", "State-gov", "Federal-gov",
     "Without-pay", "Never-worked", "?"]
)  # fmt: skip
_WORKCLASS = Categorical([73.9, 8.3, 3.6, 6.8, 4.2, 3.1, 0.05])
_COUNTRIES = pa.array(
    ["United-States", "Mexico", "?", "Philippines", "Germany", "Canada", "Puerto-Rico",
     "El-Salvador", "India", "Cuba", "England", "Jamaica", "South", "China", "Italy",
     "Dominican-Republic", "Vietnam", "Guatemala", "Japan", "Poland", "Columbia", "Taiwan",
     "Haiti", "Iran", "Portugal", "Nicaragua", "Peru", "France", "Greece", "Ecuador", "Ireland",
     "Hong", "Cambodia", "Trinadad&Tobago", "Laos", "Thailand", "Yugoslavia",
     "Outlying-US(Guam-USVI-etc)", "Honduras", "Hungary", "Scotland", "Holand-Netherlands"]
)  # fmt: skip
_COUNTRY = Categorical(
    [29170, 643, 583, 198, 137, 121, 114, 106, 100, 95, 90, 81, 80, 75, 73, 70, 67, 64, 62,
     60, 59, 51, 44, 43, 37, 34, 31, 29, 29, 28, 24, 20, 19, 19, 18, 18, 16, 14, 13, 13, 12, 1]
)  # fmt: skip
_BRACKETS = pa.array(["<=50K", ">50K"])
_GAINS = np.array([594, 2174, 3103, 4386, 5178, 7298, 7688, 10520, 14084, 15024, 27828, 99999])
_GAIN = Categorical([3, 5, 9, 7, 8, 7, 12, 4, 2, 8, 2, 3])
_LOSSES = np.array([1485, 1590, 1602, 1672, 1740, 1848, 1876, 1887, 1902, 1977, 2415])
_LOSS = Categorical([5, 4, 5, 4, 3, 5, 6, 8, 10, 8, 3])

_INTERCEPT = -4.17  # sets the share of ">50K" near adult.data's 24.1%


def generate_block(seed: int, total_rows: int, index: int) -> pa.RecordBatch:
    """Block ``index`` of the census sample (see the module docstring)."""
    del total_rows  # every row is independent
    rng = block_rng(seed, NAME, index)
    n = BLOCK_ROWS
    uniform = rng.random

    male = uniform(n) < 0.669
    age = _AGE_YEARS[_AGE.draw(uniform(n))]
    education_num = _EDUCATION.draw(uniform(n)) + 1
    # The young have not finished school yet.
    education_num = np.minimum(education_num, np.maximum(age - 10, 6) + (age >= 23) * 16)
    race = _RACE.draw(uniform(n))

    # UCI's quirk kept: most married adults in the file are husbands (40% of rows are
    # "Husband", 5% "Wife"), so married women are rare and single women common.
    never_married_p = np.clip(1.1 - (age - 17) * 0.05, 0.06, 0.97)
    widowed_p = np.clip((age - 45) * 0.006, 0, 0.35) * np.where(male, 0.3, 1.0)
    status_draw = uniform(n)
    rest = uniform(n)
    married_p = np.where(male, 0.82, 0.2)
    divorced_p = married_p + np.where(male, 0.12, 0.52)
    separated_p = divorced_p + np.where(male, 0.035, 0.17)
    marital = np.select(
        [status_draw < never_married_p, status_draw < never_married_p + widowed_p],
        [1, 4],
        np.select(
            [rest < married_p, rest < divorced_p, rest < separated_p, rest < 0.9985],
            [0, 2, 3, 5],
            6,
        ),
    )
    married = (marital == 0) | (marital == 6)
    relationship_draw = uniform(n)
    relationship = np.where(
        married & ~(relationship_draw < 0.02),
        np.where(male, 0, 1),
        np.where(
            (marital == 1) & (age < 26) & (relationship_draw < 0.75),
            2,
            np.select([relationship_draw < 0.55, relationship_draw < 0.90], [3, 4], 5),
        ),
    )

    centred = (education_num - 10).astype(np.float64)
    occupation = _OCCUPATION.draw((education_num - 1) * 2 + ~male, uniform(n))
    unknown_job = occupation == _UNKNOWN_OCCUPATION
    workclass = np.where(unknown_job, np.where(uniform(n) < 0.004, 7, 8),
                         _WORKCLASS.draw(uniform(n)))  # fmt: skip
    country = _COUNTRY.draw(uniform(n))

    full_time = (uniform(n) < 0.52) & (age >= 22) & (age <= 65) & ~unknown_job
    hours = 41 + 12 * rng.standard_normal(n) + 3 * male
    hours -= np.where(age < 22, 15, 0) + np.where(age > 65, 15, 0) + np.where(unknown_job, 8, 0)
    hours = np.where(full_time, 40, np.clip(np.rint(hours), 1, 99)).astype(np.int64)

    gain_p = np.clip(0.075 + 0.02 * centred + 0.001 * (age - 38), 0.005, 0.4)
    has_gain = uniform(n) < gain_p
    capital_gain = np.where(has_gain, _GAINS[_GAIN.draw(uniform(n))], 0)
    has_loss = ~has_gain & (uniform(n) < 0.047)
    capital_loss = np.where(has_loss, _LOSSES[_LOSS.draw(uniform(n))], 0)
    fnlwgt = np.clip(np.rint(np.exp(12.08 + 0.5 * rng.standard_normal(n))), 12_285, 1_484_705)

    logit = (
        _INTERCEPT
        + 0.38 * centred
        + 0.065 * (age - 17) * (age < 50)
        + (0.065 * 33 - 0.03 * (age - 50)) * (age >= 50)
        + 0.035 * (hours - 40)
        + 2.1 * married
        + 0.35 * male
        + 2.6 * (capital_gain >= 5000)
        + 0.5 * (capital_loss >= 1800)
        - 0.9 * unknown_job
    )
    rich = uniform(n) < 1.0 / (1.0 + np.exp(-logit))

    columns = [
        ints(age),
        strings(workclass, _WORKCLASSES),
        ints(fnlwgt),
        strings(education_num - 1, _EDUCATIONS),
        ints(education_num),
        strings(marital, _MARITAL),
        strings(occupation, _OCCUPATIONS),
        strings(relationship, _RELATIONSHIPS),
        strings(race, _RACES),
        strings(male.astype(np.int64), _GENDERS),
        ints(capital_gain),
        ints(capital_loss),
        ints(hours),
        strings(country, _COUNTRIES),
        strings(rich.astype(np.int64), _BRACKETS),
    ]
    return pa.RecordBatch.from_arrays(columns, schema=SCHEMA)


DATASET = SampleDataset(
    name=NAME,
    description="Synthetic adults with the schema of the UCI Adult census income data",
    default_rows=DEFAULT_ROWS,
    schema=SCHEMA,
    generate_block=generate_block,
)
