// One query through ClickHouse's JDBC driver: prints each row's columns joined by tabs, or the
// error. The URL, key and SQL come from the environment.
import java.sql.Connection;
import java.sql.Driver;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.Properties;

public class Query {
    public static void main(String[] args) throws ReflectiveOperationException {
        // The driver itself: jdbc-v2 0.10.0 does not register with DriverManager when loaded this way.
        Driver driver = (Driver) Class.forName("com.clickhouse.jdbc.Driver").getDeclaredConstructor().newInstance();
        Properties login = new Properties();
        login.setProperty("user", "default");
        login.setProperty("password", System.getenv("CLICKHOUSE_PASSWORD"));
        try (Connection connection = driver.connect(System.getenv("JDBC_URL"), login);
             Statement statement = connection.createStatement();
             ResultSet rows = statement.executeQuery(System.getenv("SQL"))) {
            int columns = rows.getMetaData().getColumnCount();
            while (rows.next()) {
                StringBuilder line = new StringBuilder();
                for (int i = 1; i <= columns; i++) {
                    line.append(i > 1 ? "\t" : "").append(rows.getString(i));
                }
                System.out.println(line);
            }
        } catch (SQLException error) {
            System.out.println("error: " + error.getMessage());
        }
    }
}
