# What ActiveRecord reads from a SQLite file: every column of table items but id, for every row, as JSON
# (BigDecimal in plain notation). Used by tests/test_orm_decimal_readers.py where Ruby is installed.
require "active_record"
require "json"
ActiveRecord::Base.establish_connection(adapter: "sqlite3", database: ARGV[0])
class Item < ActiveRecord::Base; end
cols = Item.column_names - ["id"]
out = Item.order(:id).map do |it|
  cols.map do |c|
    v = it.send(c)
    v.nil? ? nil : (v.is_a?(BigDecimal) ? v.to_s("F") : v.to_s)
  end
end
puts JSON.generate(out)
