// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

/// @title LivepeerToken
/// @notice Minimal ERC-20 (18 decimals) with role-based minting (MINTER_ROLE).
contract LivepeerToken {
    bytes32 public constant DEFAULT_ADMIN_ROLE = 0x00;
    bytes32 public constant MINTER_ROLE = keccak256("MINTER_ROLE");

    string public constant name = "Livepeer Token";
    string public constant symbol = "LPT";
    uint8 public constant decimals = 18;

    uint256 public totalSupply;
    mapping(address => uint256) public balanceOf;
    mapping(address => mapping(address => uint256)) public allowance;
    mapping(bytes32 => mapping(address => bool)) private roles;

    event Transfer(address indexed from, address indexed to, uint256 value);
    event Approval(address indexed owner, address indexed spender, uint256 value);
    event RoleGranted(bytes32 indexed role, address indexed account, address indexed sender);
    event RoleRevoked(bytes32 indexed role, address indexed account, address indexed sender);

    modifier onlyRole(bytes32 _role) {
        require(roles[_role][msg.sender], "missing role");
        _;
    }

    constructor() {
        roles[DEFAULT_ADMIN_ROLE][msg.sender] = true;
        emit RoleGranted(DEFAULT_ADMIN_ROLE, msg.sender, msg.sender);
    }

    function hasRole(bytes32 _role, address _account) external view returns (bool) {
        return roles[_role][_account];
    }

    function grantRole(bytes32 _role, address _account) external onlyRole(DEFAULT_ADMIN_ROLE) {
        if (!roles[_role][_account]) {
            roles[_role][_account] = true;
            emit RoleGranted(_role, _account, msg.sender);
        }
    }

    function revokeRole(bytes32 _role, address _account) external onlyRole(DEFAULT_ADMIN_ROLE) {
        if (roles[_role][_account]) {
            roles[_role][_account] = false;
            emit RoleRevoked(_role, _account, msg.sender);
        }
    }

    function mint(address _to, uint256 _amount) external onlyRole(MINTER_ROLE) {
        require(_to != address(0), "mint to the zero address");
        totalSupply += _amount;
        balanceOf[_to] += _amount;
        emit Transfer(address(0), _to, _amount);
    }

    function burn(uint256 _amount) external {
        _debit(msg.sender, _amount);
        totalSupply -= _amount;
        emit Transfer(msg.sender, address(0), _amount);
    }

    function approve(address _spender, uint256 _amount) external returns (bool) {
        allowance[msg.sender][_spender] = _amount;
        emit Approval(msg.sender, _spender, _amount);
        return true;
    }

    function transfer(address _to, uint256 _amount) external returns (bool) {
        _move(msg.sender, _to, _amount);
        return true;
    }

    function transferFrom(address _from, address _to, uint256 _amount) external returns (bool) {
        uint256 allowed = allowance[_from][msg.sender];
        if (allowed != type(uint256).max) {
            require(allowed >= _amount, "insufficient allowance");
            allowance[_from][msg.sender] = allowed - _amount;
        }
        _move(_from, _to, _amount);
        return true;
    }

    function _debit(address _from, uint256 _amount) private {
        uint256 balance = balanceOf[_from];
        require(balance >= _amount, "transfer amount exceeds balance");
        unchecked {
            balanceOf[_from] = balance - _amount;
        }
    }

    function _move(address _from, address _to, uint256 _amount) private {
        require(_to != address(0), "transfer to the zero address");
        _debit(_from, _amount);
        balanceOf[_to] += _amount;
        emit Transfer(_from, _to, _amount);
    }
}
