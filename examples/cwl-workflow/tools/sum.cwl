cwlVersion: v1.2
class: CommandLineTool
requirements:
  InlineJavascriptRequirement: {}
baseCommand: [awk, '{ s += $1 } END { print s }']
inputs:
  counts:
    type: File[]
    inputBinding: {position: 1}
stdout: total.txt
outputs:
  total: {type: stdout}
