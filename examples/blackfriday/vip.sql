-- Black Friday VIP users in one statement: the same rows as pipeline.py, label for label and
-- split for split. Run it with: mlengine sql - < vip.sql
--
-- One row per user: the user's attributes (MIN over their purchases), how many purchases and
-- what they spent; is_vip = spent more than the exact 90th percentile of all users' totals;
-- split = 80/20 by a hash of User_ID, the BigQuery idiom.
-- It is BigQuery Standard SQL: mlengine translates PERCENTILE_CONT to DuckDB's QUANTILE_CONT.
WITH users AS (
  SELECT
    User_ID,
    MIN(Gender) AS Gender,
    MIN(Age) AS Age,
    MIN(Occupation) AS Occupation,
    MIN(City_Category) AS City_Category,
    MIN(Stay_In_Current_City_Years) AS Stay_In_Current_City_Years,
    MIN(Marital_Status) AS Marital_Status,
    COUNT(*) AS purchases,
    CAST(SUM(Purchase) AS INT64) AS total_purchase
  FROM samples.blackfriday
  GROUP BY User_ID
)
SELECT
  *,
  total_purchase > PERCENTILE_CONT(total_purchase, 0.9) OVER () AS is_vip,
  IF(ABS(MOD(FARM_FINGERPRINT(CAST(User_ID AS STRING)), 10)) < 8, 'train', 'eval') AS split
FROM users
ORDER BY User_ID
