/* maestro--0.1--0.2.sql: update maestro from 0.1 to 0.2 */

\echo Use "ALTER EXTENSION maestro UPDATE TO '0.2'" to load this file. \quit

-- Every SQL change after 0.1 goes here, in the order it was made; make
-- generates maestro--0.2.sql (fresh installs) from 0.1 and this file.
