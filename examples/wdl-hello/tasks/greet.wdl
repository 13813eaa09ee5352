version 1.0

task greet {
  input {
    String name
    String greeting
  }
  command <<<
    echo "~{greeting}, ~{name}!" > greeting.txt
  >>>
  output {
    File out = "greeting.txt"
  }
}
